/**
 * What the loss-curve comparison reads of one finished run: its evaluations from
 * output_dir/metrics.jsonl (src/report/metrics-jsonl.ts; `eval` lines, `end` line) and the compute
 * path the trainer printed (`compute path: …`, src/cli/train.ts printPlan) in the run's log.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeComputePath, type ComputePath } from '../../src/model/compute-path.js';
import { readMetricsJsonl } from '../../src/report/metrics-jsonl.js';

export interface EvalPoint {
  readonly step: number;
  readonly evalLoss: number;
}

export interface RunReadout {
  /** Evaluations in step order (the last line per step, should a step appear twice). */
  readonly evals: readonly EvalPoint[];
  /** RunEnd.reason of the `end` line; undefined when the run wrote none (it crashed or is still running). */
  readonly endReason?: string;
  /** Steps the run trained (RunEnd.steps). */
  readonly endSteps?: number;
}

/** The evaluations and end of the run in `runDir` (its metrics.jsonl; none when the file is missing). */
export async function readRunEvals(runDir: string): Promise<RunReadout> {
  const lines = await readMetricsJsonl(join(runDir, 'metrics.jsonl'));
  const byStep = new Map<number, number>();
  let endReason: string | undefined;
  let endSteps: number | undefined;
  for (const l of lines) {
    if (l.type === 'eval') byStep.set(l.step, l.evalLoss);
    else if (l.type === 'end') {
      endReason = l.reason;
      endSteps = l.steps;
    }
  }
  const evals = [...byStep].sort((a, b) => a[0] - b[0]).map(([step, evalLoss]) => ({ step, evalLoss }));
  return { evals, endReason, endSteps };
}

/** The trainer's printed compute path: the path it names, and the line as printed. */
export interface PrintedComputePath {
  readonly path: ComputePath | 'unknown';
  readonly line: string;
}

const PREFIX = 'compute path: ';

/**
 * The `compute path: …` line of a training log (printPlan prints it once, before the model loads):
 * 'tensor-cores' when it starts with describeComputePath('tensor-cores'), 'f32' with
 * describeComputePath('f32'); undefined when the log has no such line.
 */
export function printedComputePath(log: string): PrintedComputePath | undefined {
  const line = log.split(/\r?\n/).find((l) => l.startsWith(PREFIX));
  if (line === undefined) return undefined;
  const rest = line.slice(PREFIX.length);
  const path: PrintedComputePath['path'] = rest.startsWith(describeComputePath('tensor-cores')) ? 'tensor-cores' : rest.startsWith(describeComputePath('f32')) ? 'f32' : 'unknown';
  return { path, line };
}

/** printedComputePath of the log file at `path` (undefined when the file is missing or has no such line). */
export async function readPrintedComputePath(path: string): Promise<PrintedComputePath | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return printedComputePath(text);
}
