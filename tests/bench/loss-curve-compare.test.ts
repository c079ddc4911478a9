import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runLossCurveCompare } from '../../bench/loss-curve/compare-command.js';
import { relativeDifference } from '../../bench/loss-curve/curve-compare.js';
import { printedComputePath } from '../../bench/loss-curve/run-readout.js';
import { RECORD_FILES, type CompareRecord } from '../../bench/loss-curve/compare-record.js';
import { describeComputePath, tensorCoreUnsupportedReason, type ComputePath } from '../../src/model/compute-path.js';
import { embeddedConfig } from '../../src/model/embedded.js';
import { formatMetricsLine, type MetricsLine } from '../../src/report/metrics-jsonl.js';
import { testGpu } from '../helpers/gpu.js';

// The comparison of bench/loss-curve-compare.ts on synthetic run folders (--compare-only: nothing
// is trained): metrics.jsonl written with the trainer's own line format, logs with the trainer's
// own "compute path:" line (describeComputePath), eval losses chosen so each rel diff is known by
// construction (tc = f32 × (1 + d)).

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempOut(): string {
  const d = mkdtempSync(join(tmpdir(), 'loss-curve-'));
  dirs.push(d);
  return d;
}

interface FakeRun {
  evals: readonly (readonly [number, number])[];
  path: ComputePath;
  end?: 'completed' | 'failed' | null;
}

function writeRun(out: string, name: 'f32' | 'tensor-cores', run: FakeRun): void {
  const dir = join(out, name);
  mkdirSync(dir, { recursive: true });
  const lines: MetricsLine[] = [
    { type: 'start', totalSteps: 6, stepsPerEpoch: 54, startStep: 0, batch: 4, seqLength: 384, gradientAccumulation: 2, warmupSteps: 1, plannedGpuBytes: 1, outputDir: dir },
  ];
  for (const [step, evalLoss] of run.evals) lines.push({ type: 'eval', step, epoch: step / 54, evalLoss, isBest: true, bestStep: step, bestEvalLoss: evalLoss, badEvaluations: 0, seconds: 1 });
  if (run.end !== null) lines.push({ type: 'end', steps: 6, reason: run.end ?? 'completed', elapsedSeconds: 10 });
  writeFileSync(join(dir, 'metrics.jsonl'), lines.map(formatMetricsLine).join(''));
  const why = run.path === 'f32' ? '(compute_dtype: float32)' : '(compute_dtype: float16)';
  writeFileSync(join(out, `${name}.log`), `config: x\nmemory plan: …\ncompute path: ${describeComputePath(run.path)} ${why}\ncompute path     the start block's line\n`);
}

const F32 = [
  [2, 13.1],
  [4, 12.7],
  [6, 12.2],
] as const;

function scaled(d: readonly number[]): [number, number][] {
  return F32.map(([s, l], i) => [s, l * (1 + d[i])]);
}

async function compare(out: string, extra: string[] = []): Promise<{ code: number; lines: string[]; record: CompareRecord }> {
  const lines: string[] = [];
  const code = await runLossCurveCompare(['--compare-only', '--out', out, '--steps', '6', '--eval-steps', '2', ...extra], (l) => lines.push(l));
  const record = JSON.parse(readFileSync(join(out, RECORD_FILES.json), 'utf8')) as CompareRecord;
  return { code, lines, record };
}

describe('loss-curve-compare --compare-only on synthetic runs', () => {
  it('passes when every evaluation is within 2%, with the table and both records', async () => {
    const out = tempOut();
    writeRun(out, 'f32', { evals: F32, path: 'f32' });
    writeRun(out, 'tensor-cores', { evals: scaled([0.01, -0.015, 0.019]), path: 'tensor-cores' });
    const { code, lines, record } = await compare(out);
    expect(code).toBe(0);
    expect(record.comparison.verdict).toBe('pass');
    expect(record.comparison.rows.map((r) => r.step)).toEqual([2, 4, 6]);
    expect(record.comparison.rows.map((r) => r.f32)).toEqual(F32.map(([, l]) => l));
    expect(record.comparison.rows.map((r) => r.relDiff)).toEqual([0.01, 0.015, 0.019].map((d) => expect.closeTo(d, 12)));
    expect(record.comparison.maxRelDiffStep).toBe(6);
    expect(record.runs.tensorCores.printedComputePath).toContain(describeComputePath('tensor-cores'));
    expect(lines).toContain('| step | f32 eval loss | tensor-core eval loss | rel diff |');
    expect(lines.some((l) => l.startsWith('| 4 | 12.70000 |') && l.endsWith('| 1.50% |'))).toBe(true);
    expect(lines.some((l) => l.startsWith('verdict: PASS'))).toBe(true);
    const md = readFileSync(join(out, RECORD_FILES.markdown), 'utf8');
    expect(md).toContain('| 6 | 12.20000 |');
    expect(md).toContain('| model_id | `embedded:qwen3-tiny` |');
    expect(md).toContain('| learning_rate | `0.0001` |'); // v7's own learning rate, kept
  });

  it('fails naming the step when one evaluation is beyond 2%', async () => {
    const out = tempOut();
    writeRun(out, 'f32', { evals: F32, path: 'f32' });
    writeRun(out, 'tensor-cores', { evals: scaled([0.005, 0.03, -0.001]), path: 'tensor-cores' });
    const { code, lines, record } = await compare(out);
    expect(code).toBe(1);
    expect(record.comparison.verdict).toBe('fail');
    expect(record.comparison.rows.map((r) => r.ok)).toEqual([true, false, true]);
    expect(record.comparison.problems.join(' ')).toContain('step 4 (3.00%)');
    expect(lines.some((l) => l.startsWith('verdict: FAIL'))).toBe(true);
  });

  it('a tighter --tolerance fails what 2% passes', async () => {
    const out = tempOut();
    writeRun(out, 'f32', { evals: F32, path: 'f32' });
    writeRun(out, 'tensor-cores', { evals: scaled([0.01, 0.01, 0.01]), path: 'tensor-cores' });
    expect((await compare(out, ['--tolerance', '0.005'])).code).toBe(1);
  });

  it('fails when the tensor-core run printed the f32 path, unless --allow-same-path (then says so)', async () => {
    const out = tempOut();
    writeRun(out, 'f32', { evals: F32, path: 'f32' });
    writeRun(out, 'tensor-cores', { evals: F32, path: 'f32' });
    const strict = await compare(out);
    expect(strict.code).toBe(1);
    expect(strict.record.comparison.problems.join(' ')).toContain('not tensor cores');
    const smoke = await compare(out, ['--allow-same-path']);
    expect(smoke.code).toBe(0);
    expect(smoke.record.comparison.verdict).toBe('pass-same-path');
    expect(smoke.lines.some((l) => l.includes('PASS ON THE SAME PATH'))).toBe(true);
  });

  it('fails when evaluations do not line up, a run did not finish, or a loss is NaN', async () => {
    const missing = tempOut();
    writeRun(missing, 'f32', { evals: F32, path: 'f32' });
    writeRun(missing, 'tensor-cores', { evals: F32.slice(0, 2), path: 'tensor-cores' });
    const m = await compare(missing);
    expect(m.code).toBe(1);
    expect(m.record.comparison.problems.join(' ')).toContain('no evaluation at step 6');

    const unfinished = tempOut();
    writeRun(unfinished, 'f32', { evals: F32, path: 'f32', end: null });
    writeRun(unfinished, 'tensor-cores', { evals: F32, path: 'tensor-cores' });
    const u = await compare(unfinished);
    expect(u.code).toBe(1);
    expect(u.record.comparison.problems.join(' ')).toContain('did not finish');

    const nan = tempOut();
    writeRun(nan, 'f32', { evals: F32, path: 'f32' });
    writeRun(nan, 'tensor-cores', { evals: [F32[0], [4, NaN], F32[2]], path: 'tensor-cores' });
    const n = await compare(nan);
    expect(n.code).toBe(1);
    expect(n.record.comparison.rows[1].ok).toBe(false);
    expect(n.record.comparison.maxRelDiffStep).toBe(4);
  });

  it('refuses to train into a folder holding a run', async () => {
    const out = tempOut();
    writeRun(out, 'f32', { evals: F32, path: 'f32' });
    const lines: string[] = [];
    expect(await runLossCurveCompare(['--out', out, '--steps', '6', '--eval-steps', '2'], (l) => lines.push(l))).toBe(1);
    expect(lines.join('\n')).toContain('already exists: runs are never overwritten');
  });
});

describe('loss-curve-compare pieces', () => {
  it('relativeDifference is |b − a| / |a|, NaN for a non-finite loss', () => {
    expect(relativeDifference(10, 10.2)).toBeCloseTo(0.02, 12);
    expect(relativeDifference(10, 9.7)).toBeCloseTo(0.03, 12);
    expect(relativeDifference(10, NaN)).toBeNaN();
  });

  it('printedComputePath reads the plan line, not the start block line', () => {
    expect(printedComputePath(`compute path     tensor cores\ncompute path: ${describeComputePath('f32')} (compute_dtype: float32)`)?.path).toBe('f32');
    expect(printedComputePath(`compute path: ${describeComputePath('tensor-cores')} (compute_dtype: float16)`)?.path).toBe('tensor-cores');
    expect(printedComputePath('no such line')).toBeUndefined();
  });
});

describe('loss-curve-compare on an adapter without tensor cores', () => {
  it('exits 2 before training anything, saying the tensor-core path is unavailable', async (ctx) => {
    const gpu = await testGpu();
    if (tensorCoreUnsupportedReason(gpu, embeddedConfig()) === undefined) ctx.skip(); // this adapter has tensor cores: the command would train
    const out = join(tempOut(), 'fresh');
    const lines: string[] = [];
    expect(await runLossCurveCompare(['--out', out, '--steps', '6', '--eval-steps', '2'], (l) => lines.push(l))).toBe(2);
    expect(lines.join('\n')).toContain('tensor-core path unavailable');
    expect(existsSync(out)).toBe(false);
  });
});
