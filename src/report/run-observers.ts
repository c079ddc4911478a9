import { join } from 'node:path';
import type { RunObserver } from '../train/events.js';
import { MetricsJsonlObserver } from './metrics-jsonl.js';
import { ProgressObserver, type ProgressStream } from './progress-observer.js';
import { ReportHtmlObserver } from './report-observer.js';

/**
 * Seeing a run: the three observers of src/report and how the CLI wires them.
 *
 *   ProgressObserver      the terminal: a progress bar redrawn in place on a TTY (evaluations and
 *                         messages printed above it), plain log lines on a pipe or in CI
 *   MetricsJsonlObserver  <output_dir>/metrics.jsonl: one JSON line per step / eval / samples /
 *                         checkpoint / start / end record, appended as they come; cut back on resume
 *   ReportHtmlObserver    <output_dir>/report.html: self-contained page (inline SVG plots, run facts,
 *                         sample generations), rewritten atomically at each evaluation and at the end
 *
 * In src/cli/train.ts (the lead's wiring):
 *
 *   const seeing = createRunObservers(config.output_dir, process.stdout);
 *   // every line the CLI or the loop prints goes through the progress observer, so that on a
 *   // terminal it lands above the bar instead of through it:
 *   const log = (line: string) => seeing.progress.message(line);
 *   await trainLoop(gpu, model, trainer, config, data, padTokenId, { log, observers: seeing.observers, samples, ... });
 *   // the loop calls each observer's methods in order, awaiting each
 *
 * The loop prints no step / eval lines of its own (the progress observer does), and sends RunStart
 * before anything else and RunEnd however it ends. Either order of the observers works: on resume the
 * report reads the earlier records of metrics.jsonl itself and keeps those at or before the start
 * step (or, without metrics.jsonl, takes RunStart.resumedFrom's records).
 */
export interface RunObservers {
  readonly progress: ProgressObserver;
  readonly metrics: MetricsJsonlObserver;
  readonly report: ReportHtmlObserver;
  /** All three, in the order the loop should call them. */
  readonly observers: readonly RunObserver[];
}

export function createRunObservers(outputDir: string, stream: ProgressStream): RunObservers {
  const metricsPath = join(outputDir, 'metrics.jsonl');
  const progress = new ProgressObserver(stream);
  const metrics = new MetricsJsonlObserver(metricsPath);
  const report = new ReportHtmlObserver(join(outputDir, 'report.html'), { metricsPath });
  return { progress, metrics, report, observers: [progress, metrics, report] };
}
