import { cpSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPeftAdapter } from '../../src/model/peft.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { checkResumeConfig } from '../../src/train/checkpoint-config.js';
import { openCheckpoint } from '../../src/train/checkpoint-reader.js';
import { resolveResumeDir } from '../../src/run/run-folder.js';
import { Interrupt } from '../../src/train/interrupt.js';
import { testGpu } from '../helpers/gpu.js';
import { syntheticExamples, tempDir, TINY_VOCAB, tinyConfig, TinySetup } from './loop-fixture.js';

/**
 * THE resume test (issue 6 item 3): 20 optimiser steps straight give the same per-step losses
 * (logging_steps 1) as 10 steps, stop, resume from the checkpoint, 10 more — to 1e-6, and the same
 * final adapter. The run exercises everything a checkpoint must carry: LoRA dropout 0.1 (the
 * micro-batch counter that seeds the masks), gradient accumulation 2 with an odd number of
 * micro-batches per epoch (the stop lands mid-epoch: data position), a cosine schedule with
 * warm-up, AdamW moments and step count, evaluation every 4 steps with best tracking,
 * save_total_limit 1 with load_best_model_at_end. The resumed trainer starts from a DIFFERENT LoRA
 * initialisation, so equality can only come from the restore.
 */
const V = TINY_VOCAB;
const train = syntheticExamples(7, 16, V, 11); // 7 micro-batches of B = 1 per epoch → 4 steps per epoch
const evalSet = syntheticExamples(3, 16, V, 12);
const data = { train, eval: evalSet };

let setup: TinySetup;
beforeAll(async () => {
  setup = await TinySetup.create(await testGpu());
}, 120_000);

describe('resume', () => {
  it('20 steps straight = 10 steps + interrupt + resume + 10 steps (losses to 1e-6, same adapter)', async () => {
    const straight = await setup.run(tinyConfig(tempDir('straight')), data);
    expect(straight.result.steps).toBe(20);
    expect(straight.records.steps.map((r) => r.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));

    const outputDir = tempDir('resumed');
    const config = tinyConfig(outputDir);
    const interrupt = new Interrupt();
    const first = await setup.run(config, data, { interrupt, onStep: (r) => r.step === 10 && interrupt.request() });
    expect(first.result.reason).toBe('interrupted');
    expect(first.result.steps).toBe(10);
    expect(first.records.checkpoints.map((c) => [c.step, c.reason])).toEqual([
      [8, 'save_steps'],
      [10, 'interrupt'],
    ]);
    // save_total_limit 1 keeps the newest, and the best evaluation's checkpoint when it has one.
    const dir = join(outputDir, 'checkpoint-10');
    const kept = first.result.bestStep === 8 ? ['checkpoint-10', 'checkpoint-8'] : ['checkpoint-10'];
    expect(readdirSync(outputDir).sort()).toEqual(kept);
    expect(first.result.lastCheckpoint).toBe(dir);
    expect(readdirSync(outputDir).filter((n) => n.includes('.tmp-'))).toEqual([]);
    for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'optimizer.safetensors', 'trainer_state.json', 'config.yaml']) expect(existsSync(join(dir, f))).toBe(true);
    // The checkpoint's adapter is PEFT's layout and holds the parameters after step 10.
    const peft = await readPeftAdapter(dir, setup.model.config);
    expect(Array.from(peft.layers[1].down_proj!.b)).toEqual(Array.from(first.params.get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')!));
    const state = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8'));
    expect(state.loop.globalStep).toBe(10);
    expect(state.loop.data).toEqual({ epoch: 2, nextMicroBatch: 4, microBatchesPerEpoch: 7 }); // steps 9, 10 of epoch 2 used micro-batches 0–3
    expect(state.trainer.microBatches).toBe(2 * 7 + 4);
    expect(state.trainer.optimizerSteps).toBe(10);
    expect(state.loop.evalHistory.map((e: { step: number }) => e.step)).toEqual([4, 8]);

    const controlDir = tempDir('control');
    cpSync(dir, join(controlDir, 'checkpoint-10'), { recursive: true }); // the resumed run rotates checkpoint-10 away
    const resumeDir = await resolveResumeDir('latest', outputDir);
    expect(resumeDir).toBe(dir);
    const opened = await openCheckpoint(resumeDir);
    expect(checkResumeConfig(opened.config, config, resumeDir)).toEqual([]);
    const second = await setup.run(config, data, { resume: opened, initSeed: 99 });
    expect(second.records.starts[0].startStep).toBe(10);
    expect(second.records.starts[0].resumedFrom?.steps.length).toBe(10);
    expect(second.result.steps).toBe(20);

    const joined = [...first.records.steps, ...second.records.steps];
    expect(joined.map((r) => r.step)).toEqual(straight.records.steps.map((r) => r.step));
    const worst = Math.max(...joined.map((r, i) => Math.abs(r.loss - straight.records.steps[i].loss)));
    console.log(`resume: 20 losses ${straight.records.steps[0].loss.toFixed(4)} → ${straight.records.steps[19].loss.toFixed(4)}, worst |Δ| ${worst}`);
    for (let i = 0; i < 20; i++) {
      expect(Math.abs(joined[i].loss - straight.records.steps[i].loss), `step ${i + 1}`).toBeLessThanOrEqual(1e-6);
      expect(joined[i].learningRate).toBe(straight.records.steps[i].learningRate);
      expect(Math.abs(joined[i].gradNorm - straight.records.steps[i].gradNorm)).toBeLessThanOrEqual(1e-6);
    }
    // The loss actually moved (a run that learns nothing would pass trivially).
    expect(straight.records.steps[19].loss).toBeLessThan(straight.records.steps[0].loss);
    expect([...first.records.evals, ...second.records.evals].map((e) => [e.step, e.evalLoss, e.isBest, e.badEvaluations])).toEqual(
      straight.records.evals.map((e) => [e.step, e.evalLoss, e.isBest, e.badEvaluations]),
    );
    expect(second.result.bestStep).toBe(straight.result.bestStep);
    // The final adapter (the best one, restored) is the same bits.
    for (const [key, value] of straight.params) expect(Array.from(second.params.get(key)!), key).toEqual(Array.from(value));

    // Negative control: the same resume with the micro-batch counter (the dropout seed) off by one
    // draws other LoRA-dropout masks, and the losses after step 10 move.
    const copy = await openCheckpoint(join(controlDir, 'checkpoint-10'));
    const shifted = { ...copy, state: { ...copy.state, trainer: { ...copy.state.trainer, microBatches: copy.state.trainer.microBatches + 1 } } };
    const control = await setup.run(tinyConfig(controlDir), data, { resume: shifted, initSeed: 99 });
    const moved = Math.max(...control.records.steps.map((r, i) => Math.abs(r.loss - second.records.steps[i].loss)));
    console.log(`resume with the dropout counter off by one: worst |Δ loss| ${moved.toExponential(2)}`);
    expect(moved).toBeGreaterThan(1e-4);
  }, 120_000);

  it('8-bit AdamW: 6 steps straight = 3 + interrupt + resume + 3 (quantised state, scales and small-tensor moments saved)', async () => {
    // r = 48: gate/up B (96 × 48) and down A (48 × 96) have 4608 ≥ min_8bit_size elements (8-bit
    // codes + absmax), the others keep 32-bit moments: both kinds go through optimizer.safetensors.
    const settings = { optim: 'paged_adamw_8bit', lora_r: 48, lora_alpha: 96, max_steps: 6, eval_strategy: 'no', save_strategy: 'no', load_best_model_at_end: false } as const;
    const straight = await setup.run(tinyConfig(tempDir('straight8'), settings), data);
    const outputDir = tempDir('resumed8');
    const interrupt = new Interrupt();
    const first = await setup.run(tinyConfig(outputDir, settings), data, { interrupt, onStep: (r) => r.step === 3 && interrupt.request() });
    expect(first.result.lastCheckpoint).toBe(join(outputDir, 'checkpoint-3'));
    const opt = await SafetensorsFile.open(join(outputDir, 'checkpoint-3', 'optimizer.safetensors'));
    expect([...opt.tensors.keys()].sort()).toEqual(['absmax', 'small.exp_avg', 'small.exp_avg_sq', 'state1', 'state2']);
    expect(opt.tensors.get('state1')!.dtype).toBe('U8');
    await opt.close();
    const opened = await openCheckpoint(first.result.lastCheckpoint!);
    const second = await setup.run(tinyConfig(outputDir, settings), data, { resume: opened, initSeed: 98 });
    const joined = [...first.records.steps, ...second.records.steps];
    expect(joined.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
    joined.forEach((r, i) => expect(Math.abs(r.loss - straight.records.steps[i].loss), `step ${i + 1}`).toBeLessThanOrEqual(1e-6));
    for (const [key, value] of straight.params) expect(Array.from(second.params.get(key)!), key).toEqual(Array.from(value));
  }, 120_000);

  it('refuses a checkpoint whose shape or data keys differ, naming the key; warns on others', async () => {
    const saved = { ...tinyConfig('/x') } as unknown as Record<string, unknown>;
    expect(() => checkResumeConfig(saved, tinyConfig('/x', { lora_r: 8 }), 'ckpt')).toThrow(/lora_r is 4 in the checkpoint but 8 now/);
    expect(() => checkResumeConfig(saved, tinyConfig('/x', { per_device_train_batch_size: 2 }), 'ckpt')).toThrow(/per_device_train_batch_size .*data position/);
    expect(() => checkResumeConfig(saved, tinyConfig('/x', { optim: 'paged_adamw_8bit' }), 'ckpt')).toThrow(/optim is "adamw_torch" in the checkpoint/);
    expect(checkResumeConfig(saved, tinyConfig('/y', { learning_rate: 5e-3, logging_steps: 3 }), 'ckpt')).toEqual([
      'resume: learning_rate was 0.01 in the checkpoint, now 0.005; the run continues with the new value',
    ]);
    await expect(resolveResumeDir('latest', tempDir('empty'))).rejects.toThrow(/no complete checkpoint/);
  });
});
