import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, DeviceError, NonFiniteError } from '../../src/errors.js';
import { readPeftAdapter } from '../../src/model/peft.js';
import { NODE_FS, type FileSystem } from '../../src/io/atomic-file.js';
import { Gpu } from '../../src/kernels/gpu.js';
import { openCheckpoint } from '../../src/train/checkpoint-reader.js';
import { ProgressObserver } from '../../src/report/progress-observer.js';
import type { RunObserver } from '../../src/train/events.js';
import type { Trainer } from '../../src/train/trainer.js';
import { testGpu } from '../helpers/gpu.js';
import { RecordingObserver, syntheticExamples, tempDir, TINY_VOCAB, tinyConfig, TinySetup } from './loop-fixture.js';

/**
 * Faults during training (issue 6 item 5), simulated: a NaN written into a LoRA parameter between
 * logging steps, a disk that fills up while a checkpoint is written, and a device destroyed
 * mid-run. Each stops the run with an error that names where to continue from.
 */
const data = { train: syntheticExamples(7, 16, TINY_VOCAB, 21), eval: syntheticExamples(3, 16, TINY_VOCAB, 22) };

let setup: TinySetup;
beforeAll(async () => {
  setup = await TinySetup.create(await testGpu());
}, 120_000);

/** Every file of a folder and its SHA-256. */
function digest(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]));
}

describe('robustness', () => {
  it('a NaN between logging steps stops the run naming the step range and the last good checkpoint', async () => {
    const out = tempDir('nan');
    const config = tinyConfig(out, { logging_steps: 4, save_steps: 2, eval_strategy: 'no', load_best_model_at_end: false, max_steps: 12 });
    const ends = new RecordingObserver();
    let trainer: Trainer | undefined;
    // Right after checkpoint-2 is written, one LoRA B element becomes NaN: steps 3 and 4 see a NaN
    // loss and gradients, the GPU skips both updates, and the logging step 4 reads the sticky count.
    const poison: RunObserver = {
      onCheckpoint: (r) => {
        if (r.step === 2) setup.gpu.write(trainer!.adapter.arena.params, new Float32Array([NaN]), trainer!.adapter.arena.slots[1].offset * 4);
      },
    };
    const run = setup.run(config, data, { observers: [poison, ends], prepare: (t) => (trainer = t) });
    await expect(run).rejects.toThrow(NonFiniteError);
    const message = await run.catch((e: Error) => e.message);
    console.log(`NaN: ${message}`);
    const ckpt = join(out, 'checkpoint-2');
    expect(message).toMatch(/non-finite loss or gradients between steps 3 and 4: 2 optimiser update\(s\) had non-finite gradients and were skipped/);
    expect(message).toContain(`The last good checkpoint is ${ckpt}: continue from it with \`node train.js --resume ${ckpt}\``);
    expect(message).toMatch(/Lower learning_rate \(now 0\.01\)/);
    expect(ends.ends).toEqual([expect.objectContaining({ reason: 'failed', steps: 4, lastCheckpoint: ckpt })]);
    // The named checkpoint is good: finite parameters.
    const adapter = await readPeftAdapter(ckpt, setup.model.config);
    for (const layer of adapter.layers) for (const pair of Object.values(layer)) expect([...pair!.a, ...pair!.b].every(Number.isFinite)).toBe(true);
    expect(readdirSync(out)).toEqual(['checkpoint-2']);
  }, 120_000);

  it('a full disk while writing a checkpoint: clear error, nothing half-written, the previous checkpoint intact', async () => {
    const out = tempDir('enospc');
    const config = tinyConfig(out, { save_steps: 2, eval_strategy: 'no', load_best_model_at_end: false, max_steps: 6, save_total_limit: 1 });
    // The file system fills up in the middle of checkpoint-4's optimizer.safetensors.
    const full: FileSystem = {
      ...NODE_FS,
      open: async (path, flags) => {
        const h = await NODE_FS.open(path, flags);
        if (!(path.includes('checkpoint-4') && path.includes('optimizer.safetensors'))) return h;
        let written = 0;
        return {
          ...h,
          sync: () => h.sync(),
          close: () => h.close(),
          write: async (buffer, offset, length, position) => {
            if (written + length > 300) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
            written += length;
            return h.write(buffer, offset, length, position);
          },
        };
      },
    };
    const before: Record<string, string>[] = [];
    const snapshot: RunObserver = { onCheckpoint: (r) => void (r.step === 2 && before.push(digest(r.dir))) };
    let shown = '';
    const progress = new ProgressObserver({ write: (t: string) => (shown += t), isTTY: false });
    const run = setup.run(config, data, { observers: [snapshot, progress], checkpointFs: full });
    await expect(run).rejects.toThrow(CheckpointError);
    const message = await run.catch((e: Error) => e.message);
    const previous = join(out, 'checkpoint-2');
    expect(message).toBe(
      `no space left on device while writing ${join(out, 'checkpoint-4', 'optimizer.safetensors')}; the previous checkpoint ${previous} is intact; free space or lower save_total_limit`,
    );
    // The message is printed once: by the caller from the thrown error (the CLI, on stderr); the
    // progress output's end line says where the run stopped without repeating it.
    expect(shown).not.toContain('no space left');
    expect(shown).toMatch(/^failed at step 4 after .*; last checkpoint /m);
    // Nothing of checkpoint-4 (no temporary folder), checkpoint-2 byte for byte as written, and resumable.
    expect(readdirSync(out)).toEqual(['checkpoint-2']);
    expect(digest(previous)).toEqual(before[0]);
    expect((await openCheckpoint(previous)).state.loop.globalStep).toBe(2);
  }, 120_000);

  it('a lost device fails the run with the reason and what to do, naming the checkpoint to resume from', async () => {
    const gpu = await Gpu.open(); // its own device: this test destroys it
    try {
      const own = await TinySetup.create(gpu);
      const out = tempDir('lost');
      const config = tinyConfig(out, { save_steps: 2, eval_strategy: 'no', load_best_model_at_end: false, logging_steps: 1, max_steps: 8 });
      const run = own.run(config, data, { onStep: (r) => r.step === 3 && gpu.device.destroy() });
      await expect(run).rejects.toThrow(DeviceError);
      const message = await run.catch((e: Error) => e.message);
      console.log(`device lost: ${message}`);
      expect(message).toMatch(/^GPU device lost \(reason: destroyed\)/);
      expect(message).toMatch(/update the GPU driver/);
      expect(message).toMatch(/lower per_device_train_batch_size or max_seq_length/);
      expect(message).toContain(`node train.js --resume ${join(out, 'checkpoint-2')}`);
    } finally {
      gpu.destroy();
    }
  }, 120_000);
});
