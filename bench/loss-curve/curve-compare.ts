/**
 * The verdict of the loss-curve comparison (issue 11 item 7): the tensor-core run's eval loss
 * within `tolerance` (relative, 0.02 = 2%) of the f32 run's at every evaluation, both runs having
 * finished and evaluated at the same steps, the f32 run on the f32 path and the other on tensor
 * cores. rel diff = |tc − f32| / |f32|.
 */
import type { ComputePath } from '../../src/model/compute-path.js';
import type { RunReadout } from './run-readout.js';

export interface CurveRow {
  readonly step: number;
  readonly f32: number;
  readonly tensorCores: number;
  readonly relDiff: number;
  readonly ok: boolean;
}

/**
 * pass: every check holds; fail: a check failed (problems say which); pass-same-path: the curves
 * agree but the second run did not take the tensor-core path, allowed by --allow-same-path (the
 * smoke test on an adapter without tensor cores: not the item-7 check).
 */
export type Verdict = 'pass' | 'fail' | 'pass-same-path';

export interface CurveComparison {
  readonly rows: readonly CurveRow[];
  /** Largest rel diff over the rows (NaN when a loss is not finite; undefined with no rows). */
  readonly maxRelDiff?: number;
  readonly maxRelDiffStep?: number;
  readonly verdict: Verdict;
  /** One sentence per failed check, naming the run, step or file. */
  readonly problems: readonly string[];
  /** What --allow-same-path let through (the tensor-core path not taken). */
  readonly notes: readonly string[];
}

export interface CompareInput {
  readonly f32: RunReadout;
  readonly tensorCores: RunReadout;
  /** The path each run printed (undefined: no `compute path:` line found). */
  readonly f32Path: ComputePath | 'unknown' | undefined;
  readonly tensorCoresPath: ComputePath | 'unknown' | undefined;
  readonly tolerance: number;
  readonly allowSamePath: boolean;
  /** Where each run lives, for messages. */
  readonly f32Dir: string;
  readonly tensorCoresDir: string;
}

/** |b − a| / |a|: NaN when either is not finite (or a is 0 and b is not). */
export function relativeDifference(a: number, b: number): number {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return NaN;
  if (a === b) return 0;
  return Math.abs(b - a) / Math.abs(a);
}

export function compareCurves(input: CompareInput): CurveComparison {
  const problems: string[] = [];
  const notes: string[] = [];
  const runs = [
    { name: 'f32', readout: input.f32, dir: input.f32Dir },
    { name: 'tensor-cores', readout: input.tensorCores, dir: input.tensorCoresDir },
  ] as const;
  for (const r of runs) {
    if (r.readout.endReason === undefined) problems.push(`the ${r.name} run (${r.dir}) has no end line in metrics.jsonl: it did not finish; see its log`);
    else if (r.readout.endReason !== 'completed') problems.push(`the ${r.name} run (${r.dir}) ended "${r.readout.endReason}" at step ${r.readout.endSteps}, not "completed"`);
    if (r.readout.evals.length === 0) problems.push(`the ${r.name} run (${r.dir}) has no eval lines in metrics.jsonl; check eval_strategy and its eval split`);
  }
  if (input.f32Path !== 'f32') problems.push(`the f32 run (${input.f32Dir}) printed ${pathWords(input.f32Path)}, not the f32 path`);
  if (input.tensorCoresPath !== 'tensor-cores') {
    const what = `the tensor-core run (${input.tensorCoresDir}) printed ${pathWords(input.tensorCoresPath)}, not tensor cores`;
    if (input.allowSamePath && input.tensorCoresPath === 'f32') notes.push(`${what} (--allow-same-path: a smoke test, not the item-7 check)`);
    else problems.push(what);
  }

  const tc = new Map(input.tensorCores.evals.map((e) => [e.step, e.evalLoss]));
  const f32Steps = new Set(input.f32.evals.map((e) => e.step));
  const missing = input.f32.evals.filter((e) => !tc.has(e.step)).map((e) => e.step);
  const extra = input.tensorCores.evals.filter((e) => !f32Steps.has(e.step)).map((e) => e.step);
  if (missing.length > 0) problems.push(`the tensor-core run (${input.tensorCoresDir}) has no evaluation at step${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, which the f32 run has`);
  if (extra.length > 0) problems.push(`the f32 run (${input.f32Dir}) has no evaluation at step${extra.length > 1 ? 's' : ''} ${extra.join(', ')}, which the tensor-core run has`);

  const rows: CurveRow[] = [];
  for (const e of input.f32.evals) {
    const other = tc.get(e.step);
    if (other === undefined) continue;
    const relDiff = relativeDifference(e.evalLoss, other);
    rows.push({ step: e.step, f32: e.evalLoss, tensorCores: other, relDiff, ok: relDiff <= input.tolerance });
  }
  // The worst row: a non-finite loss (NaN rel diff) counts as the worst of all.
  let worst: CurveRow | undefined;
  for (const r of rows) {
    if (worst !== undefined && Number.isNaN(worst.relDiff)) break;
    if (worst === undefined || Number.isNaN(r.relDiff) || r.relDiff > worst.relDiff) worst = r;
  }
  const maxRelDiff = worst?.relDiff;
  const maxRelDiffStep = worst?.step;
  const bad = rows.filter((r) => !r.ok);
  if (bad.length > 0) {
    problems.push(
      `${bad.length} of ${rows.length} evaluations differ by more than ${percent(input.tolerance)}: ${bad.map((r) => `step ${r.step} (${Number.isNaN(r.relDiff) ? 'a loss is not finite' : percent(r.relDiff)})`).join(', ')}`,
    );
  }
  const verdict: Verdict = problems.length > 0 ? 'fail' : notes.length > 0 ? 'pass-same-path' : 'pass';
  return { rows, maxRelDiff, maxRelDiffStep, verdict, problems, notes };
}

function pathWords(p: ComputePath | 'unknown' | undefined): string {
  if (p === undefined) return 'no "compute path:" line';
  if (p === 'unknown') return 'a compute path it does not name as f32 or tensor cores';
  return p === 'f32' ? 'the f32 path' : 'the tensor-core path';
}

/** 0.0123 → "1.23%". */
export function percent(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}
