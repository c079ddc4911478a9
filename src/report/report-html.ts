import type { SampleRecord } from '../train/events.js';
import { escapeHtml } from './escape-html.js';
import { formatBytes, formatDuration, formatExp } from './format-units.js';
import { renderLineChart, type ChartSeries } from './line-chart.js';
import { embeddedNotice } from './embedded-notice.js';
import { runRows, type RunDescription } from './run-description.js';
import type { RunHistory } from './run-history.js';

/**
 * report.html as one self-contained string: run facts, charts as inline SVG (no script at all), and
 * the sample generations. A Content-Security-Policy forbids every external load and every script,
 * so the page cannot reach the network, and a mistake that tried would show as a console error in
 * the browser test. Every text from the run goes through escapeHtml.
 *
 * Series colours are fixed and used for nothing else on the page; other text is neutral grey and
 * the status badge a pale background, so that no anti-aliased glyph edge passes for a series colour
 * (the Chromium test finds each chart's lines by its colour):
 */
export const SERIES_COLORS = {
  trainLoss: '#1f77b4',
  evalLoss: '#ff7f0e',
  learningRate: '#2ca02c',
  tokensPerSecond: '#9467bd',
  trainAccuracy: '#17becf',
  evalAccuracy: '#d62728',
} as const;

const CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE = `
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; max-width: 1140px; }
.notice { border: 1px solid #e0c070; background: #fbf0d9; padding: 8px 12px; border-radius: 4px; }
.notice code { font-size: 13px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
table { border-collapse: collapse; }
.facts td { padding: 2px 14px 2px 0; vertical-align: top; }
.facts td:first-child { color: #666; }
.status { font-weight: bold; color: #111; padding: 0 6px; border-radius: 3px; }
.status-running { background: #e3eefa; } .status-completed, .status-early_stopping { background: #e2f3e4; }
.status-interrupted { background: #fbf0d9; } .status-failed { background: #fadcdc; }
.charts { display: flex; flex-wrap: wrap; gap: 12px 20px; }
figure { margin: 0; min-width: 0; max-width: 100%; }
figure.wide { flex: 1 1 100%; max-width: 1100px; } figure.half { flex: 1 1 420px; max-width: 540px; }
figure svg { display: block; width: 100%; height: auto; }
.evals td, .evals th { border: 1px solid #ddd; padding: 3px 10px; text-align: right; }
.evals th { background: #f4f4f4; }
figcaption { font-size: 14px; font-weight: bold; margin-bottom: 2px; }
.samples td, .samples th { border: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
.samples th { background: #f4f4f4; }
.samples pre { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 12px; }
details { margin-top: 12px; }
footer { margin-top: 24px; font-size: 12px; color: #777; }
`;

/** The whole page for `history`, stamped with `updated` (an ISO time, passed in so tests are reproducible). */
export function renderReportHtml(history: RunHistory, updated: string, description?: RunDescription): string {
  const model = history.start.model ?? history.start.outputDir;
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="${CSP}">`,
    `<title>Training report — ${escapeHtml(model)}</title>`,
    `<style>${STYLE}</style>`,
    '</head>',
    '<body>',
    `<h1>Training report — ${escapeHtml(model)}</h1>`,
    description?.embedded ? renderEmbeddedNotice() : '',
    renderFacts(history, updated),
    description ? `<h2>Run</h2>\n${renderRun(description, history)}` : '',
    '<h2>Curves</h2>',
    `<div class="charts">${renderCharts(history)}</div>`,
    '<h2>Loss by evaluation</h2>',
    renderEvalTable(history),
    '<h2>Sample generations</h2>',
    renderSamples(history.samples),
    `<footer>Written by prompt-lora-trainer at ${escapeHtml(updated)}; rewritten at each evaluation and at the end of the run. Raw numbers: metrics.jsonl next to this file.</footer>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** The embedded model has random weights: say so above everything else. */
function renderEmbeddedNotice(): string {
  const [first, ...rest] = embeddedNotice();
  return `<p class="notice" id="embedded-notice"><strong>${escapeHtml(first)}</strong><br>${rest.map(escapeHtml).join('<br>')}</p>`;
}

/** The resolved hyperparameters, device, compute path and memory plan (run-description.ts). */
function renderRun(d: RunDescription, h: RunHistory): string {
  const rows = runRows(d, h.start);
  return `<table class="facts" id="run-table">\n${rows.map(([k, v]) => `<tr><td>${escapeHtml(k)}</td><td>${escapeHtml(v)}</td></tr>`).join('\n')}\n</table>`;
}

/**
 * One row per evaluation (per epoch with eval_strategy epoch): the eval loss next to the mean train
 * loss of the steps logged since the previous evaluation.
 */
function renderEvalTable(h: RunHistory): string {
  if (h.evals.length === 0) return '<p>No evaluation yet.</p>';
  const evals = [...h.evals].sort((a, b) => a.step - b.step);
  const rows = evals.map((e, i) => {
    const from = i === 0 ? -Infinity : evals[i - 1].step;
    const losses = h.steps.filter((r) => r.step > from && r.step <= e.step && Number.isFinite(r.loss)).map((r) => r.loss);
    const train = losses.length > 0 ? losses.reduce((a, b) => a + b, 0) / losses.length : undefined;
    return `<tr><td>${e.step}</td><td>${e.epoch.toFixed(2)}</td><td>${number(train, 4)}</td><td>${number(e.evalLoss, 4)}</td><td>${e.isBest ? 'best' : ''}</td></tr>`;
  });
  return `<table class="evals" id="eval-table">\n<tr><th>step</th><th>epoch</th><th>train loss (mean since last eval)</th><th>eval loss</th><th></th></tr>\n${rows.join('\n')}\n</table>`;
}

function renderFacts(h: RunHistory, updated: string): string {
  const s = h.start;
  const last = h.lastStep;
  const ev = h.lastEval;
  const status = h.end?.reason ?? 'running';
  const steps = h.end?.steps ?? last?.step ?? s.startStep;
  const rows: [string, string][] = [
    ['status', `<span class="status status-${status}">${escapeHtml(status.replace('_', ' '))}</span>${h.end?.message ? ` — ${escapeHtml(h.end.message)}` : ''}`],
    ['model', escapeHtml(s.model ?? '(not named)')],
    ['output', escapeHtml(s.outputDir)],
    ['steps', `${steps} / ${s.totalSteps}${s.startStep > 0 ? ` (resumed at step ${s.startStep}${s.resumedFrom ? ` from ${escapeHtml(s.resumedFrom.dir)}` : ''})` : ''}${last ? `, epoch ${last.epoch.toFixed(2)}` : ''}, ${s.stepsPerEpoch} per epoch`],
    ['batch', `${s.batch} × ${s.seqLength} tokens, accumulation ${s.gradientAccumulation} (${s.batch * s.seqLength * s.gradientAccumulation} tokens per step), ${s.warmupSteps} warm-up steps`],
    ['planned GPU memory', formatBytes(s.plannedGpuBytes)],
    ['best eval loss', ev ? `${number(ev.bestEvalLoss, 4)} at step ${ev.bestStep}` : '—'],
    ['last eval loss', ev ? `${number(ev.evalLoss, 4)} at step ${ev.step}` : '—'],
    ['last train loss', last ? `${number(last.loss, 4)} at step ${last.step}, lr ${formatExp(last.learningRate)}, grad norm ${number(last.gradNorm, 3)}` : '—'],
    ['throughput', last ? `${number(last.tokensPerSecond, 0)} tokens/s` : '—'],
    ['time', `${formatDuration(h.end?.elapsedSeconds ?? last?.elapsedSeconds ?? 0)} elapsed${!h.end && last ? `, eta ${formatDuration(last.etaSeconds)}` : ''}`],
    ['checkpoints', h.checkpoints.length > 0 ? `${h.checkpoints.length}, latest ${escapeHtml(h.checkpoints[h.checkpoints.length - 1].dir)}` : 'none yet'],
    ['updated', escapeHtml(updated)],
  ];
  return `<table class="facts">\n${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('\n')}\n</table>`;
}

/** A number for a table cell; "—" when missing or non-finite. */
function number(x: number | undefined, digits: number): string {
  return x !== undefined && Number.isFinite(x) ? x.toFixed(digits) : '—';
}

function renderCharts(h: RunHistory): string {
  const wide = { width: 1100, height: 340 };
  const half = { width: 540, height: 260 };
  const train = (f: (r: (typeof h.steps)[number]) => number | undefined): [number, number][] =>
    h.steps.filter((r) => f(r) !== undefined).map((r) => [r.step, f(r)!]);
  const charts: { caption: string; spec: Parameters<typeof renderLineChart>[0] }[] = [
    {
      caption: 'Loss',
      spec: {
        id: 'chart-loss', title: 'train and eval loss vs step', xLabel: 'step', ...wide,
        series: [
          { name: 'train loss', color: SERIES_COLORS.trainLoss, points: train((r) => r.loss) },
          { name: 'eval loss', color: SERIES_COLORS.evalLoss, points: h.evals.map((r) => [r.step, r.evalLoss]), markers: true },
        ],
      },
    },
    {
      caption: 'Learning rate',
      spec: { id: 'chart-lr', title: 'learning rate vs step', xLabel: 'step', ...half, series: [{ name: 'lr', color: SERIES_COLORS.learningRate, points: train((r) => r.learningRate) }] },
    },
    {
      caption: 'Throughput',
      spec: { id: 'chart-tokens', title: 'tokens per second vs step', xLabel: 'step', ...half, series: [{ name: 'tokens/s', color: SERIES_COLORS.tokensPerSecond, points: train((r) => r.tokensPerSecond) }] },
    },
  ];
  const accuracy: ChartSeries[] = [
    { name: 'train token accuracy', color: SERIES_COLORS.trainAccuracy, points: train((r) => r.tokenAccuracy) },
    { name: 'eval token accuracy', color: SERIES_COLORS.evalAccuracy, points: h.evals.filter((r) => r.evalTokenAccuracy !== undefined).map((r) => [r.step, r.evalTokenAccuracy!]), markers: true },
  ];
  if (accuracy.some((s) => s.points.length > 0)) {
    charts.push({ caption: 'Token accuracy', spec: { id: 'chart-accuracy', title: 'token accuracy vs step', xLabel: 'step', ...wide, series: accuracy } });
  }
  return charts.map((c) => `<figure class="${c.spec.width === wide.width ? 'wide' : 'half'}"><figcaption>${c.caption}</figcaption>\n${renderLineChart(c.spec)}\n</figure>`).join('\n');
}

/**
 * The latest sample of each prompt (prompts in the order they first appeared), then every earlier
 * sample, newest step first, inside a collapsed <details>.
 */
function renderSamples(samples: readonly SampleRecord[]): string {
  if (samples.length === 0) return '<p>No samples yet (they are generated at evaluations).</p>';
  const latest = new Map<string, SampleRecord>();
  for (const s of samples) {
    const seen = latest.get(s.prompt);
    if (!seen || s.step >= seen.step) latest.set(s.prompt, s);
  }
  const shown = new Set(latest.values());
  const earlier = samples.filter((s) => !shown.has(s)).sort((a, b) => b.step - a.step);
  const table = (rows: readonly SampleRecord[]): string =>
    `<table class="samples">\n<tr><th>step</th><th>prompt</th><th>output</th></tr>\n` +
    rows.map((s) => `<tr><td>${s.step}</td><td><pre>${escapeHtml(s.prompt)}</pre></td><td><pre>${escapeHtml(s.output)}</pre></td></tr>`).join('\n') +
    '\n</table>';
  let html = table([...latest.values()]);
  if (earlier.length > 0) html += `\n<details><summary>Earlier samples (${earlier.length})</summary>\n${table(earlier)}\n</details>`;
  return html;
}
