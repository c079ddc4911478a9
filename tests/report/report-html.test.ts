import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MetricsJsonlObserver } from '../../src/report/metrics-jsonl.js';
import { SERIES_COLORS, renderReportHtml } from '../../src/report/report-html.js';
import { ReportHtmlObserver } from '../../src/report/report-observer.js';
import { RunHistory } from '../../src/report/run-history.js';
import { evalRecord, runStart, sample, stepRecord } from './records.js';

const NASTY = `<script>document.title="pwned"</script> & "quoted" 'single' <img src=x onerror=alert(1)>`;

function history(): RunHistory {
  const h = new RunHistory(runStart({ model: 'models/<my & model>' }));
  for (let s = 1; s <= 40; s++) h.steps.push(stepRecord(s, { tokenAccuracy: 0.3 + s / 100 }));
  h.evals.push(evalRecord(20, 1.4), evalRecord(40, 1.5, { isBest: false, bestStep: 20, bestEvalLoss: 1.4, badEvaluations: 1, evalTokenAccuracy: 0.6 }));
  h.samples.push(sample(20, 'prompt A', 'first A'), sample(20, 'prompt B', NASTY), sample(40, 'prompt A', 'second A'), sample(40, 'prompt B', 'second B'));
  h.checkpoints.push({ step: 20, dir: 'outputs/test-run/checkpoint-20', reason: 'save_steps' });
  return h;
}

/** The text of the element with the given id's enclosing <figure> (the chart). */
function chart(html: string, id: string): string {
  const start = html.indexOf(`<svg id="${id}"`);
  expect(start, `chart ${id} present`).toBeGreaterThan(0);
  return html.slice(start, html.indexOf('</svg>', start));
}

describe('report.html', () => {
  it('is self-contained: no script, no external reference, a CSP that forbids both', () => {
    const html = renderReportHtml(history(), '2026-11-25T12:00:00.000Z');
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<[^>]*\s(?:src|href|xlink:href)=/i); // inside tags only: the escaped sample text holds "src="
    // The only URL is the SVG namespace name (an identifier, never fetched).
    expect([...html.matchAll(/https?:\/\/[^\s"'<>]+/g)].map((m) => m[0]).every((u) => u === 'http://www.w3.org/2000/svg')).toBe(true);
    expect(html).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`);
  });

  it('escapes every text from the run (model name, prompts, outputs)', () => {
    const html = renderReportHtml(history(), 'now');
    expect(html).not.toContain('<script>document.title');
    expect(html).not.toContain('<img src=x');
    expect(html).toContain('&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt; &amp; &quot;quoted&quot; &#39;single&#39; &lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('Training report — models/&lt;my &amp; model&gt;');
  });

  it('has the run facts in the header', () => {
    const html = renderReportHtml(history(), '2026-11-25T12:00:00.000Z');
    const facts = html.slice(html.indexOf('<table class="facts">'), html.indexOf('</table>'));
    expect(facts).toContain('status-running');
    expect(facts).toContain('40 / 200');
    expect(facts).toContain('8 × 192 tokens, accumulation 2 (3072 tokens per step)');
    expect(facts).toContain('5.7 GiB');
    expect(facts).toContain('1.4000 at step 20'); // best eval loss
    expect(facts).toContain('1.5000 at step 40'); // last eval loss
    expect(facts).toContain('outputs/test-run/checkpoint-20');
    expect(facts).toContain('2026-11-25T12:00:00.000Z');
  });

  it('plots train and eval loss on one chart, and lr, tokens/s and accuracy, each series with its points', () => {
    const h = history();
    const html = renderReportHtml(h, 'now');
    const loss = chart(html, 'chart-loss');
    expect(loss).toContain(`stroke="${SERIES_COLORS.trainLoss}"`);
    expect(loss.match(new RegExp(`<circle[^>]*fill="${SERIES_COLORS.evalLoss}"`, 'g'))?.length).toBe(2); // one marker per evaluation
    expect(loss).toContain('train loss');
    expect(loss).toContain('eval loss');
    const trainPath = new RegExp(`<path d="([^"]*)"[^>]*stroke="${SERIES_COLORS.trainLoss}"`).exec(loss)!;
    expect(trainPath[1].split(/[ML]/).filter((s) => s.trim() !== '').length).toBe(40);
    expect(chart(html, 'chart-lr')).toContain(`stroke="${SERIES_COLORS.learningRate}"`);
    expect(chart(html, 'chart-tokens')).toContain(`stroke="${SERIES_COLORS.tokensPerSecond}"`);
    const acc = chart(html, 'chart-accuracy');
    expect(acc).toContain(`stroke="${SERIES_COLORS.trainAccuracy}"`);
    expect(acc).toContain(`fill="${SERIES_COLORS.evalAccuracy}"`);
  });

  it('leaves the accuracy chart out when no accuracy was measured, and shows empty charts before the first step', () => {
    const h = new RunHistory(runStart());
    const html = renderReportHtml(h, 'now');
    expect(html).not.toContain('chart-accuracy');
    expect(chart(html, 'chart-loss')).toContain('no data yet');
    expect(html).toContain('No samples yet');
  });

  it('shows the latest sample per prompt, and the earlier ones collapsed', () => {
    const html = renderReportHtml(history(), 'now');
    const samples = html.slice(html.indexOf('<h2>Sample generations</h2>'));
    const [latest, earlier] = samples.split('<details>');
    expect(latest).toContain('second A');
    expect(latest).toContain('second B');
    expect(latest).not.toContain('first A');
    expect(earlier).toContain('<summary>Earlier samples (2)</summary>');
    expect(earlier).toContain('first A');
    expect(earlier).toContain('&lt;script&gt;');
  });

  it('states how the run ended', () => {
    const h = history();
    h.end = { steps: 40, reason: 'failed', elapsedSeconds: 60, message: 'non-finite loss at step 41 <see log>' };
    const html = renderReportHtml(h, 'now');
    expect(html).toContain('status-failed');
    expect(html).toContain('non-finite loss at step 41 &lt;see log&gt;');
  });
});

describe('ReportHtmlObserver', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'report-html-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('rewrites the page at start, eval, samples and end, not at steps, leaving no temporary file', async () => {
    const path = join(dir, 'out', 'report.html');
    const r = new ReportHtmlObserver(path, { now: () => new Date(0) });
    await r.onStart(runStart());
    expect(await readFile(path, 'utf8')).toContain('no data yet');
    r.onStep(stepRecord(1));
    r.onStep(stepRecord(2));
    expect(await readFile(path, 'utf8')).toContain('no data yet');
    await r.onEval(evalRecord(2, 1.3));
    const afterEval = await readFile(path, 'utf8');
    expect(afterEval).not.toContain('no data yet');
    expect(afterEval).toContain('1.3000 at step 2');
    await r.onSamples([sample(2, 'p', 'sampled text')]);
    expect(await readFile(path, 'utf8')).toContain('sampled text');
    await r.onEnd({ steps: 2, reason: 'completed', elapsedSeconds: 5 });
    expect(await readFile(path, 'utf8')).toContain('status-completed');
    expect(await readdir(join(dir, 'out'))).toEqual(['report.html']);
  });

  it('on resume, plots the earlier part of the run from metrics.jsonl up to the start step', async () => {
    const metricsPath = join(dir, 'metrics.jsonl');
    const m = new MetricsJsonlObserver(metricsPath);
    await m.onStart(runStart());
    for (let s = 1; s <= 15; s++) await m.onStep(stepRecord(s));
    await m.onEval(evalRecord(10, 1.25));
    await m.onSamples([sample(10, 'p', 'before the crash')]);
    const r = new ReportHtmlObserver(join(dir, 'report.html'), { metricsPath });
    await r.onStart(runStart({ startStep: 10 }));
    r.onStep(stepRecord(11, { loss: 0.5 }));
    await r.onEval(evalRecord(11, 1.2));
    const html = await readFile(join(dir, 'report.html'), 'utf8');
    const path = new RegExp(`<path d="([^"]*)"[^>]*stroke="${SERIES_COLORS.trainLoss}"`).exec(html)!;
    expect(path[1].split(/[ML]/).filter((s) => s.trim() !== '').length).toBe(11); // steps 1..10 restored + 11
    expect(html).toContain('before the crash');
    expect(html).toContain('(resumed at step 10)');
  });

  it('on resume without metrics.jsonl, plots the records the checkpoint carries', async () => {
    const r = new ReportHtmlObserver(join(dir, 'report.html'), { metricsPath: join(dir, 'missing.jsonl') });
    const steps = [1, 2, 3, 4, 5, 6].map((s) => stepRecord(s));
    await r.onStart(runStart({ startStep: 4, resumedFrom: { dir: 'out/<ckpt>-4', steps, evals: [evalRecord(4, 1.25)] } }));
    const html = await readFile(join(dir, 'report.html'), 'utf8');
    const path = new RegExp(`<path d="([^"]*)"[^>]*stroke="${SERIES_COLORS.trainLoss}"`).exec(html)!;
    expect(path[1].split(/[ML]/).filter((s) => s.trim() !== '').length).toBe(4); // steps 1..4, not 5 and 6
    expect(html).toContain('1.2500 at step 4');
    expect(html).toContain('(resumed at step 4 from out/&lt;ckpt&gt;-4)');
  });

  it('refuses records before onStart with a message naming the call', () => {
    const r = new ReportHtmlObserver(join(dir, 'report.html'));
    expect(() => r.onStep(stepRecord(1))).toThrow(/ReportHtmlObserver\.onStep: called before onStart/);
  });
});
