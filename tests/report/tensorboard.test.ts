import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TensorBoardObserver } from '../../src/report/tensorboard-observer.js';
import { createRunObservers } from '../../src/report/run-observers.js';
import { crc32c, readEventFile, readRecords } from './tfevents-decoder.js';
import { evalRecord, runStart, stepRecord } from './records.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tensorboard-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** float32 rounding of a double, as simple_value stores it. */
const f32 = (x: number): number => Math.fround(x);

describe('test-only decoder', () => {
  it('computes the CRC-32C check value of RFC 3720 / the CRC catalogue ("123456789" → 0xE3069283)', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });

  it('rejects a file whose data was changed after framing', async () => {
    const tb = new TensorBoardObserver(dir, { hyperparameters: { a: 1 }, host: 'testhost' });
    await tb.onStart(runStart());
    await tb.onStep(stepRecord(1));
    await tb.onEnd({ steps: 1, reason: 'completed', elapsedSeconds: 1 });
    const [name] = await readdir(tb.logDir);
    const bytes = new Uint8Array(await readFile(join(tb.logDir, name)));
    expect(readRecords(bytes).length).toBeGreaterThan(2);
    bytes[bytes.length - 6] ^= 0x01;
    expect(() => readRecords(bytes)).toThrow(/bad data CRC/);
  });
});

describe('TensorBoardObserver', () => {
  it('writes transformers-style runs/<time>_<host>/events.out.tfevents.* with every logged step and evaluation', async () => {
    const hyper = { model_id: 'Qwen/Qwen3-4B', learning_rate: 2e-4, lora_r: 16 };
    const tb = new TensorBoardObserver(dir, { hyperparameters: hyper, host: 'testhost' });
    expect(tb.logDir).toMatch(/[/\\]runs[/\\][A-Z][a-z]{2}\d{2}_\d{2}-\d{2}-\d{2}_testhost$/);
    await tb.onStart(runStart());
    const steps = [1, 2, 3, 7, 10, 11, 20];
    const evals = [10, 20];
    for (const s of steps) {
      await tb.onStep(stepRecord(s, { tokenAccuracy: s / 40 }));
      if (evals.includes(s)) await tb.onEval(evalRecord(s, 3 - s / 20, { evalTokenAccuracy: 0.1 + s / 100 }));
    }
    await tb.onEnd({ steps: 20, reason: 'completed', elapsedSeconds: 30 });

    const files = await readdir(tb.logDir);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(new RegExp(`^events\\.out\\.tfevents\\.\\d{10}\\.testhost\\.${process.pid}\\.0$`));
    const events = readEventFile(new Uint8Array(await readFile(join(tb.logDir, files[0]))));

    expect(events[0].fileVersion).toBe('brain.Event:2');
    expect(events[0].wallTime).toBeGreaterThan(1.7e9);
    const args = events[1].values[0];
    expect(args.tag).toBe('args/text_summary');
    expect(args.plugin).toBe('text');
    expect(JSON.parse(args.strings![0])).toEqual(hyper);

    const scalar = (tag: string): [number, number][] =>
      events.flatMap((e) => e.values.filter((v) => v.tag === tag).map((v): [number, number] => [e.step, v.simpleValue!]));
    for (const [tag, of] of [
      ['train/loss', (s: number) => stepRecord(s).loss],
      ['train/learning_rate', (s: number) => stepRecord(s).learningRate],
      ['train/grad_norm', (s: number) => stepRecord(s).gradNorm],
      ['train/epoch', (s: number) => stepRecord(s).epoch],
      ['train/mean_token_accuracy', (s: number) => s / 40],
      ['train/tokens_per_second', (s: number) => stepRecord(s).tokensPerSecond],
    ] as const) {
      expect(scalar(tag), tag).toEqual(steps.map((s) => [s, f32(of(s))]));
    }
    expect(scalar('eval/loss')).toEqual(evals.map((s) => [s, f32(3 - s / 20)]));
    expect(scalar('eval/mean_token_accuracy')).toEqual(evals.map((s) => [s, f32(0.1 + s / 100)]));
    expect(scalar('eval/runtime')).toEqual(evals.map((s) => [s, 3]));
  });

  it('leaves out a metric the step did not measure, and refuses records before onStart', async () => {
    const tb = new TensorBoardObserver(dir, { hyperparameters: {}, host: 'h' });
    await expect(tb.onStep(stepRecord(1))).rejects.toThrow(/before onStart/);
    await tb.onStart(runStart());
    await tb.onStep(stepRecord(1));
    await tb.onEnd({ steps: 1, reason: 'completed', elapsedSeconds: 1 });
    const [name] = await readdir(tb.logDir);
    const tags = readEventFile(new Uint8Array(await readFile(join(tb.logDir, name)))).flatMap((e) => e.values.map((v) => v.tag));
    expect(tags).toContain('train/loss');
    expect(tags).not.toContain('train/mean_token_accuracy');
  });
});

describe('compiled (npm run build): bench/tensorboard-sample.js, the input of bench/tensorboard-check.py', () => {
  // Under plain Node (not vitest's resolver) the crc-32 subpath import must resolve too.
  it('writes an event file that the decoder reads back with 20 steps and 2 evaluations', async () => {
    const logDir = execFileSync(process.execPath, ['dist/bench/tensorboard-sample.js', dir], { encoding: 'utf8' }).trim();
    const [name] = await readdir(logDir);
    const events = readEventFile(new Uint8Array(await readFile(join(logDir, name))));
    const steps = (tag: string): number[] => events.filter((e) => e.values.some((v) => v.tag === tag)).map((e) => e.step);
    expect(steps('train/loss')).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(steps('eval/loss')).toEqual([10, 20]);
  });
});

describe('createRunObservers with report_to', () => {
  const stream = { isTTY: false, columns: 80, write: () => true };
  it('adds no TensorBoard writer for report_to none', () => {
    const seeing = createRunObservers(dir, stream, { reportTo: [] });
    expect(seeing.tensorboard).toBeUndefined();
    expect(seeing.notices).toEqual([]);
  });

  it('tensorboard: says where the files go; wandb: the same files and the exact sync command for this run', () => {
    const tb = createRunObservers(dir, stream, { reportTo: ['tensorboard'] });
    expect(tb.observers).toContain(tb.tensorboard);
    expect(tb.notices).toEqual([`tensorboard: event files → ${tb.tensorboard!.logDir}; view with: tensorboard --logdir ${join(dir, 'runs')}`]);
    const wb = createRunObservers(dir, stream, { reportTo: ['wandb'] });
    expect(wb.notices[1]).toBe(`wandb: nothing is uploaded from here; sync this run's logs with: wandb sync --sync-tensorboard ${wb.tensorboard!.logDir}`);
  });
});
