import { join } from 'node:path';
import type { RunObserver } from '../train/events.js';
import { MetricsJsonlObserver } from './metrics-jsonl.js';
import { ProgressObserver, type ProgressStream } from './progress-observer.js';
import { ReportHtmlObserver } from './report-observer.js';
import type { RunDescription } from './run-description.js';
import { StartBlockObserver } from './start-block.js';
import { TensorBoardObserver } from './tensorboard-observer.js';

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
 *   StartBlockObserver    the start-of-run block (start-block.ts), when a RunDescription is given
 *   TensorBoardObserver   report_to tensorboard / wandb: <output_dir>/runs/<time>_<host>/events.out.tfevents.*
 *
 * In src/cli/train.ts (the lead's wiring):
 *
 *   const seeing = createRunObservers(config.output_dir, process.stdout, { description, reportTo: config.report_to, hyperparameters: config });
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
  /** With report_to tensorboard or wandb: the event-file writer (its logDir is where they go). */
  readonly tensorboard?: TensorBoardObserver;
  /** Lines for the user before training (where the TensorBoard logs go, how to sync them to W&B). */
  readonly notices: readonly string[];
  /** All of them, in the order the loop should call them. */
  readonly observers: readonly RunObserver[];
}

export interface RunObserverOptions {
  /** The run in words: printed as the start block and shown in report.html. */
  readonly description?: RunDescription;
  /** config.report_to (normalised: tensorboard, wandb). */
  readonly reportTo?: readonly string[];
  /** The resolved config, written to the TensorBoard logs as the "args" text. */
  readonly hyperparameters?: Readonly<Record<string, unknown>>;
}

export function createRunObservers(outputDir: string, stream: ProgressStream, options: RunObserverOptions = {}): RunObservers {
  const metricsPath = join(outputDir, 'metrics.jsonl');
  const progress = new ProgressObserver(stream);
  const metrics = new MetricsJsonlObserver(metricsPath);
  const report = new ReportHtmlObserver(join(outputDir, 'report.html'), { metricsPath, description: options.description });
  const reportTo = options.reportTo ?? [];
  const notices: string[] = [];
  let tensorboard: TensorBoardObserver | undefined;
  if (reportTo.includes('tensorboard') || reportTo.includes('wandb')) {
    tensorboard = new TensorBoardObserver(outputDir, { hyperparameters: options.hyperparameters ?? {} });
    notices.push(`tensorboard: event files → ${tensorboard.logDir}; view with: tensorboard --logdir ${join(outputDir, 'runs')}`);
    if (reportTo.includes('wandb')) notices.push(`wandb: nothing is uploaded from here; sync this run's logs with: wandb sync --sync-tensorboard ${tensorboard.logDir}`);
  }
  const start = options.description ? [new StartBlockObserver(options.description, (line) => progress.message(line))] : [];
  const observers: RunObserver[] = [progress, ...start, metrics, report, ...(tensorboard ? [tensorboard] : [])];
  return { progress, metrics, report, tensorboard, notices, observers };
}
