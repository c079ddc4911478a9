import { mkdtemp, readFile, rm, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MetricsJsonlObserver, readMetricsJsonl } from '../../src/report/metrics-jsonl.js';
import { evalRecord, runStart, sample, stepRecord } from './records.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'metrics-jsonl-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The file's lines parsed with plain JSON.parse (not the module's reader). */
async function rawLines(path: string): Promise<Record<string, unknown>[]> {
  const text = await readFile(path, 'utf8');
  expect(text.endsWith('\n')).toBe(true);
  return text.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A run of `steps` logged steps from `from`, an eval every 10 steps, a checkpoint every 10, no end (a crash). */
async function runSteps(m: MetricsJsonlObserver, from: number, to: number, loss: (s: number) => number): Promise<void> {
  for (let s = from + 1; s <= to; s++) {
    await m.onStep(stepRecord(s, { loss: loss(s) }));
    if (s % 10 === 0) {
      await m.onEval(evalRecord(s, loss(s) + 0.1));
      await m.onSamples([sample(s, 'a prompt', `output at ${s}`)]);
      await m.onCheckpoint({ step: s, dir: join(dir, `checkpoint-${s}`), reason: 'save_steps' });
    }
  }
}

describe('metrics.jsonl', () => {
  it('writes one typed JSON object per record, in order, each line on disk as soon as it is sent', async () => {
    const path = join(dir, 'sub', 'metrics.jsonl');
    const m = new MetricsJsonlObserver(path);
    await m.onStart(runStart());
    await m.onStep(stepRecord(1, { tokenAccuracy: 0.5 }));
    // Already on disk before the next record (a crash here keeps it).
    expect((await rawLines(path)).map((l) => l.type)).toEqual(['start', 'step']);
    await m.onEval(evalRecord(1, 1.5));
    await m.onSamples([sample(1, 'p <&>', 'o "q"')]);
    await m.onCheckpoint({ step: 1, dir: 'c1', reason: 'save_steps' });
    await m.onEnd({ steps: 1, reason: 'completed', elapsedSeconds: 2, bestStep: 1, bestEvalLoss: 1.5 });
    const lines = await rawLines(path);
    expect(lines.map((l) => l.type)).toEqual(['start', 'step', 'eval', 'samples', 'checkpoint', 'end']);
    expect(lines[1]).toEqual({ type: 'step', ...stepRecord(1, { tokenAccuracy: 0.5 }) });
    expect(lines[1]).toMatchObject({ loss: expect.any(Number), learningRate: expect.any(Number), gradNorm: 0.8, tokensPerSecond: 1234, tokenAccuracy: 0.5, plannedGpuBytes: 5.7 * 1024 ** 3 });
    expect(lines[2]).toEqual({ type: 'eval', ...evalRecord(1, 1.5) });
    expect(lines[3]).toEqual({ type: 'samples', step: 1, samples: [sample(1, 'p <&>', 'o "q"')] });
    expect(lines[5]).toMatchObject({ type: 'end', reason: 'completed', steps: 1 });
  });

  it('writes a non-finite loss as null and reads it back as NaN', async () => {
    const path = join(dir, 'metrics.jsonl');
    const m = new MetricsJsonlObserver(path);
    await m.onStart(runStart());
    await m.onStep(stepRecord(1, { loss: NaN, gradNorm: Infinity }));
    expect((await rawLines(path))[1]).toMatchObject({ loss: null, gradNorm: null });
    const back = await readMetricsJsonl(path);
    expect(back[1]).toMatchObject({ type: 'step', step: 1 });
    expect(Number.isNaN((back[1] as { loss: number }).loss)).toBe(true);
  });

  it('a fresh run (start step 0) replaces an old file', async () => {
    const path = join(dir, 'metrics.jsonl');
    const a = new MetricsJsonlObserver(path);
    await a.onStart(runStart());
    await runSteps(a, 0, 25, () => 1);
    const b = new MetricsJsonlObserver(path);
    await b.onStart(runStart());
    expect((await rawLines(path)).map((l) => l.type)).toEqual(['start']);
  });

  it('on resume keeps the lines up to the start step, drops later ones and a torn last line, then appends', async () => {
    const path = join(dir, 'metrics.jsonl');
    const first = new MetricsJsonlObserver(path);
    await first.onStart(runStart());
    await runSteps(first, 0, 27, (s) => 10 - s * 0.1); // crashed after step 27; last checkpoint at 20
    await appendFile(path, '{"type":"step","step":28,"lo'); // the write the crash cut short
    const before = await rawLines(join(dir, 'metrics.jsonl')).catch(() => undefined);
    expect(before, 'the torn line makes the raw file unparseable as a whole').toBeUndefined();

    const resumed = new MetricsJsonlObserver(path);
    await resumed.onStart(runStart({ startStep: 20 }));
    await runSteps(resumed, 20, 30, (s) => 20 - s * 0.1); // different losses, to tell the runs apart
    await resumed.onEnd({ steps: 30, reason: 'completed', elapsedSeconds: 60 });

    const lines = await rawLines(path);
    const steps = lines.filter((l) => l.type === 'step');
    // Steps 1..30 exactly once each: 1..20 from the first run, 21..30 from the resumed one.
    expect(steps.map((l) => l.step)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    for (const l of steps) expect(l.loss).toBeCloseTo((l.step as number) <= 20 ? 10 - (l.step as number) * 0.1 : 20 - (l.step as number) * 0.1, 12);
    expect(lines.filter((l) => l.type === 'eval').map((l) => l.step)).toEqual([10, 20, 30]);
    expect(lines.filter((l) => l.type === 'checkpoint').map((l) => l.step)).toEqual([10, 20, 30]);
    expect(lines.filter((l) => l.type === 'start').map((l) => l.startStep)).toEqual([0, 20]);
    // The second start line sits where the first run's step-20 records end.
    const secondStart = lines.findIndex((l) => l.type === 'start' && l.startStep === 20);
    expect(lines[secondStart - 1]).toMatchObject({ type: 'checkpoint', step: 20 });
    expect(lines[lines.length - 1]).toMatchObject({ type: 'end', steps: 30 });
  });

  it('a resume without metrics.jsonl writes the records the checkpoint carries, and the start line only names its folder', async () => {
    const path = join(dir, 'metrics.jsonl');
    const m = new MetricsJsonlObserver(path);
    const steps = [5, 10, 15].map((s) => stepRecord(s));
    const evals = [evalRecord(10, 1.3), evalRecord(15, 1.2)];
    await m.onStart(runStart({ startStep: 10, resumedFrom: { dir: 'out/checkpoint-10', steps, evals } }));
    const lines = await rawLines(path);
    // Records after the start step (15) are not this run's past; eval 10 follows step 10.
    expect(lines.map((l) => [l.type, l.step ?? l.startStep])).toEqual([['step', 5], ['step', 10], ['eval', 10], ['start', 10]]);
    expect(lines[3].resumedFromDir).toBe('out/checkpoint-10');
    expect(lines[3]).not.toHaveProperty('resumedFrom');
  });

  it('a resume without an earlier file starts one', async () => {
    const path = join(dir, 'metrics.jsonl');
    const m = new MetricsJsonlObserver(path);
    await m.onStart(runStart({ startStep: 40 }));
    expect(await rawLines(path)).toEqual([{ type: 'start', ...runStart({ startStep: 40 }) }]);
  });

  it('names the file and what to check when it cannot write', async () => {
    const m = new MetricsJsonlObserver(join(dir, 'metrics.jsonl'));
    await m.onStart(runStart());
    await rm(dir, { recursive: true, force: true });
    await expect(m.onStep(stepRecord(1))).rejects.toThrow(/appending a step record to .*metrics\.jsonl failed/);
  });
});
