import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERIES_COLORS } from '../../src/report/report-html.js';
import { ReportHtmlObserver } from '../../src/report/report-observer.js';
import { Rng } from '../helpers/random.js';
import { findChromium, screenshotPage } from './chromium.js';
import { colorPixels, decodePng, nonWhitePixels, type Image } from './png.js';
import { evalRecord, runStart, sample, stepRecord } from './records.js';

/**
 * Issue 6 item 4: report.html opened in headless Chromium renders its plots (screenshot not blank,
 * each series' colour drawn where its chart is) with no console errors. Chromium is the Debian
 * package `chromium`; .ci/run installs it. Without it this file FAILS when the environment has CI
 * set, and is skipped (with a message) elsewhere.
 */
const CHROMIUM = findChromium();
const REQUIRED = ![undefined, '', '0', 'false'].includes(process.env.CI);
if (!CHROMIUM && !REQUIRED) console.warn('tests/report/report-chromium.test.ts skipped: no chromium on PATH (apt-get install -y chromium); in CI it fails instead');

const WIDTH = 1200;
const HEIGHT = 1600;
/** Anti-aliasing blends line edges with the background; the 2-px strokes keep core pixels within this of the colour. */
const TOLERANCE = 24;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'report-chromium-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function chromium(): string {
  if (!CHROMIUM) throw new Error('chromium is not installed but CI is set: the report.html browser test must run in CI. Install it with `apt-get install -y chromium` (.ci/run does this).');
  return CHROMIUM;
}

async function shoot(path: string, width = WIDTH): Promise<{ img: Image; console: string[] }> {
  const shot = await screenshotPage(chromium(), path, width, HEIGHT);
  const img = decodePng(shot.png);
  expect([img.width, img.height]).toEqual([width, HEIGHT]);
  return { img, console: shot.console };
}

/** A run of 2,000 logged steps (noisy loss, warm-up + cosine lr, a diverged step), 20 evaluations with samples. */
async function writeRunReport(path: string): Promise<void> {
  const rng = new Rng(11);
  const r = new ReportHtmlObserver(path, { now: () => new Date('2026-11-25T12:00:00Z') });
  const total = 2000;
  await r.onStart(runStart({ totalSteps: total }));
  for (let s = 1; s <= total; s++) {
    const lr = 2e-4 * Math.min(1, s / 100) * 0.5 * (1 + Math.cos((Math.PI * s) / total));
    const loss = s === 777 ? NaN : 1 + 2 * Math.exp(-s / 300) + 0.1 * rng.normal();
    r.onStep(stepRecord(s, { totalSteps: total, loss, learningRate: lr, tokensPerSecond: 1200 + 100 * rng.normal(), tokenAccuracy: 0.4 + 0.3 * (1 - Math.exp(-s / 500)) }));
    if (s % 100 === 0) {
      const e = 1.1 + 2 * Math.exp(-s / 300);
      await r.onEval(evalRecord(s, e, { evalTokenAccuracy: 0.3 + 0.3 * (1 - Math.exp(-s / 500)) }));
      await r.onSamples([sample(s, 'A lighthouse at dusk', `step ${s}: waves <crash> & "foam" on rocks`), sample(s, 'A city in rain', `<script>throw new Error("injected ${s}")</script>`)]);
    }
  }
  await r.onEnd({ steps: total, reason: 'completed', bestStep: 2000, bestEvalLoss: 1.1, elapsedSeconds: 3000 });
}

// Without chromium in CI the tests below run and each fails with the message of chromium().
describe.skipIf(!CHROMIUM && !REQUIRED)('report.html in headless Chromium', () => {
  it('controls: the PNG decoder measures a known box exactly, and a broken page shows up as console messages', async () => {
    const path = join(dir, 'control.html');
    await writeFile(path, [
      '<!doctype html><html><body style="margin:0;background:#fff">',
      '<div style="position:absolute;left:10px;top:20px;width:100px;height:50px;background:#ff0000"></div>',
      '<svg width="100" height="100"><path d="M NaN 3 L 4 5" stroke="#000"/></svg>',
      '<script>console.error("control-console-error"); throw new Error("control-uncaught");</script>',
      '</body></html>',
    ].join('\n'));
    const { img, console } = await shoot(path);
    const red = colorPixels(img, '#ff0000', 0);
    expect(red).toEqual({ count: 100 * 50, x0: 10, x1: 109, y0: 20, y1: 69 });
    const log = console.join('\n');
    expect(log).toContain('control-console-error');
    expect(log).toContain('Uncaught Error: control-uncaught');
    expect(log).toContain('attribute d: Expected number');
  });

  it('renders every plot of a 2,000-step run with no console message', async () => {
    const path = join(dir, 'report.html');
    await writeRunReport(path);
    const { img, console } = await shoot(path);
    expect(console, `console messages:\n${console.join('\n')}`).toEqual([]);
    expect(nonWhitePixels(img)).toBeGreaterThan(20_000);
    const px = Object.fromEntries(Object.entries(SERIES_COLORS).map(([k, c]) => [k, colorPixels(img, c, TOLERANCE)])) as Record<keyof typeof SERIES_COLORS, ReturnType<typeof colorPixels>>;
    const counts = Object.fromEntries(Object.entries(px).map(([k, v]) => [k, v.count]));
    for (const [name, p] of Object.entries(px)) expect(p.count, `${name} pixels (all counts: ${JSON.stringify(counts)})`).toBeGreaterThan(300);
    // The train-loss line spans its wide chart; lr and tokens/s sit side by side below it; accuracy below them.
    expect(px.trainLoss.x1 - px.trainLoss.x0).toBeGreaterThan(800);
    expect(px.learningRate.x1).toBeLessThan(px.tokensPerSecond.x0);
    expect(px.trainLoss.y1).toBeLessThan(px.learningRate.y0);
    expect(px.learningRate.y1).toBeLessThan(px.trainAccuracy.y0);
    expect(px.trainAccuracy.y1).toBeLessThan(HEIGHT);
  });

  // Issue 13: the charts scale to the window instead of scrolling sideways.
  it.each([700, 1400])('at a %i px window the charts fit the window', async (width) => {
    const path = join(dir, `report-${width}.html`);
    await writeRunReport(path);
    const { img, console } = await shoot(path, width);
    expect(console).toEqual([]);
    const px = Object.fromEntries(Object.entries(SERIES_COLORS).map(([k, c]) => [k, colorPixels(img, c, TOLERANCE)])) as Record<keyof typeof SERIES_COLORS, ReturnType<typeof colorPixels>>;
    for (const [name, p] of Object.entries(px)) {
      expect(p.count, name).toBeGreaterThan(100);
      expect(p.x1, `${name} drawn past the window's right edge`).toBeLessThan(width - 10);
    }
    // The wide loss chart takes most of the window: ~24 px body margins plus the plot's own margins.
    expect(px.trainLoss.x1 - px.trainLoss.x0).toBeGreaterThan(Math.min(width, 1140) - 200);
    if (width >= 1400) expect(px.learningRate.x1).toBeLessThan(px.tokensPerSecond.x0); // side by side
    else expect(px.learningRate.y1).toBeLessThan(px.tokensPerSecond.y0); // stacked
  });

  it('negative control: a report with no records yet draws no series (so the counts above come from the data)', async () => {
    const path = join(dir, 'empty.html');
    const r = new ReportHtmlObserver(path);
    await r.onStart(runStart());
    const { img, console } = await shoot(path);
    expect(console).toEqual([]);
    for (const [name, c] of Object.entries(SERIES_COLORS)) expect(colorPixels(img, c, TOLERANCE).count, name).toBeLessThan(50);
    expect(nonWhitePixels(img)).toBeGreaterThan(1000); // the header and the empty frames are drawn
  });
});
