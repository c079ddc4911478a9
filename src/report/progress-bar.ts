import type { StepRecord } from '../train/events.js';
import { formatDuration, formatExp } from './format-units.js';

/**
 * The one-line progress bar of a terminal, as plain text that fits a given width (no ANSI codes:
 * the observer adds the cursor control). Layout, widest first:
 *
 *   step 20/200 [██░░░░░░░░░░░░░░░░░░░░░░] 10% | epoch 0.40 | loss 1.2345 | lr 1.98e-04 | 1234 tok/s | eta 3m12s | elapsed 1m05s
 *
 * When the terminal is narrower, fields are dropped in a fixed order (elapsed, lr, epoch, tokens/s,
 * eta, loss) until the rest fits with a bar of at least MIN_BAR cells; below that the line is cut.
 */

/** What the bar shows: the last logged step, or only the position before the first one. */
export interface ProgressView {
  readonly step: number;
  readonly totalSteps: number;
  readonly record?: StepRecord;
}

const MIN_BAR = 10;
const MAX_BAR = 30;
const SEPARATOR = ' | ';

interface Field {
  readonly text: string;
  /** Lower is dropped first. */
  readonly keep: number;
}

/** The bar line for `view`, at most `columns - 1` characters (the last column would wrap on some terminals). */
export function renderProgressBar(view: ProgressView, columns: number): string {
  const width = Math.max(1, Math.floor(columns) - 1);
  const total = Math.max(1, view.totalSteps);
  const fraction = Math.min(1, Math.max(0, view.step / total));
  const head = `step ${view.step}/${view.totalSteps}`;
  const percent = `${Math.floor(fraction * 100)}%`;
  let fields = viewFields(view);
  const lineWithout = (fs: readonly Field[]): number => head.length + 3 + percent.length + 1 + fs.reduce((n, f) => n + SEPARATOR.length + f.text.length, 0);
  while (fields.length > 0 && lineWithout(fields) + MIN_BAR > width) {
    const drop = fields.reduce((lo, f) => (f.keep < lo.keep ? f : lo));
    fields = fields.filter((f) => f !== drop);
  }
  const cells = Math.max(MIN_BAR, Math.min(MAX_BAR, width - lineWithout(fields)));
  const filled = Math.round(fraction * cells);
  const bar = `[${'█'.repeat(filled)}${'░'.repeat(cells - filled)}]`;
  const line = [`${head} ${bar} ${percent}`, ...fields.map((f) => f.text)].join(SEPARATOR);
  return line.length <= width ? line : line.slice(0, width);
}

function viewFields(view: ProgressView): Field[] {
  const r = view.record;
  if (!r) return [{ text: 'starting', keep: 6 }];
  return [
    { text: `epoch ${r.epoch.toFixed(2)}`, keep: 2 },
    { text: `loss ${r.loss.toFixed(4)}`, keep: 5 },
    { text: `lr ${formatExp(r.learningRate)}`, keep: 1 },
    { text: `${r.tokensPerSecond.toFixed(0)} tok/s`, keep: 3 },
    { text: `eta ${formatDuration(r.etaSeconds)}`, keep: 4 },
    { text: `elapsed ${formatDuration(r.elapsedSeconds)}`, keep: 0 },
  ];
}
