import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { iterateBatches, planBatches } from '../../src/data/batching.js';
import type { RunObserver, SampleRecord } from '../../src/train/events.js';
import { padBatch } from '../../src/train/pad-batch.js';
import { testGpu } from '../helpers/gpu.js';
import { syntheticExamples, tempDir, TINY_VOCAB, tinyConfig, TinySetup } from './loop-fixture.js';

/**
 * The loop's records: the logged loss is the mean per target token over EVERY micro-batch since
 * the last record (summed on the GPU), checked against the forward pass run on the same batches;
 * and the observers see start, steps, evaluations, samples, checkpoints and the end in order.
 */
const data = { train: syntheticExamples(7, 16, TINY_VOCAB, 31), eval: syntheticExamples(3, 16, TINY_VOCAB, 32) };

let setup: TinySetup;
beforeAll(async () => {
  setup = await TinySetup.create(await testGpu());
}, 120_000);

describe('training loop records', () => {
  it('logs the mean loss per target token over all micro-batches since the last record', async () => {
    // lr 1e-9 and no dropout: the parameters (B = 0 at init) stay put, so a plain forward of each
    // micro-batch gives the losses the training step sums. 2 steps per record × 2 micro-batches.
    const config = tinyConfig(tempDir('loss'), {
      learning_rate: 1e-9,
      lr_scheduler_type: 'constant',
      warmup_steps: 0,
      lora_dropout: 0,
      logging_steps: 2,
      max_steps: 2,
      eval_strategy: 'no',
      save_strategy: 'no',
      load_best_model_at_end: false,
    });
    const trainer = await setup.trainer(config, 1);
    const program = setup.model.program({ B: 1, T: 16 }, trainer.lora);
    const plan = planBatches(data.train, { batchSize: 1, maxSeqLength: 16, packing: false, groupByLength: false, seed: config.seed, padTokenId: 0, fixedLength: true });
    let sum = 0;
    let targets = 0;
    const each: number[] = [];
    for (const batch of [...iterateBatches(data.train, plan, 0, 0)].slice(0, 4)) {
      const r = await program.run(padBatch(batch, 1, 16, 0));
      sum += r.loss * r.targets;
      targets += r.targets;
      each.push(r.loss);
    }
    program.destroy();
    trainer.destroy();
    const expected = sum / targets;
    const { records } = await setup.run(config, data);
    expect(records.steps.map((r) => r.step)).toEqual([2]);
    // f32 sums on the GPU against a float64 sum of f32 means: 1e-5 relative.
    expect(Math.abs(records.steps[0].loss - expected) / expected).toBeLessThan(1e-5);
    // The check can tell: the last micro-batch alone (the old sample) is far from the mean.
    expect(Math.abs(each[3] - expected) / expected).toBeGreaterThan(1e-3);
  }, 60_000);

  it('observers see start, steps, evals, samples, epoch checkpoints and the end, in order; early stopping ends the run', async () => {
    const out = tempDir('events');
    const config = tinyConfig(out, {
      max_steps: -1,
      num_train_epochs: 3,
      logging_steps: 2,
      eval_strategy: 'epoch',
      save_strategy: 'epoch',
      save_total_limit: 2,
      load_best_model_at_end: true,
      early_stopping_patience: 1,
      // the repro: a threshold no change can pass only feeds the patience counter; the best
      // checkpoint is still the lowest eval_loss (transformers' metric_for_best_model)
      early_stopping_threshold: 1000,
    });
    const events: string[] = [];
    const evalLosses = new Map<number, number>();
    const seen: RunObserver = {
      onStart: (r) => void events.push(`start ${r.startStep}/${r.totalSteps}`),
      onStep: (r) => void events.push(`step ${r.step}`),
      onEval: (r) => {
        evalLosses.set(r.step, r.evalLoss);
        events.push(`eval ${r.step}${r.isBest ? ' best' : ''} bad=${r.badEvaluations}`);
      },
      onSamples: (s) => void events.push(`samples ${s[0].step}`),
      onCheckpoint: (r) => void events.push(`checkpoint ${r.step} ${r.reason}`),
      onEnd: (r) => void events.push(`end ${r.reason} ${r.steps} best=${r.bestStep}`),
    };
    const samples = async (step: number): Promise<SampleRecord[]> => [{ step, prompt: 'p', output: 'o' }];
    // A checkpoint folder left half-written by a process that is gone (a crash) is cleaned up.
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    mkdirSync(join(out, `checkpoint-3.tmp-${dead}`), { recursive: true });
    const { result, lines } = await setup.run(config, data, { observers: [seen], samples });
    // 7 micro-batches, accumulation 2: 4 steps per epoch; epoch 1 ends at step 4, epoch 2 at step 8.
    const bestStep = evalLosses.get(8)! < evalLosses.get(4)! ? 8 : 4;
    expect(events).toEqual([
      'start 0/12',
      'step 2',
      'step 4',
      'eval 4 best bad=0',
      'samples 4',
      'checkpoint 4 epoch',
      'step 6',
      'step 8',
      `eval 8${bestStep === 8 ? ' best' : ''} bad=1`,
      'samples 8',
      'checkpoint 8 final',
      `end early_stopping 8 best=${bestStep}`,
    ]);
    expect(result.reason).toBe('early_stopping');
    expect(result.bestEvalLoss).toBe(Math.min(...evalLosses.values()));
    expect(result.bestStep).toBe(bestStep);
    expect(readdirSync(out).sort()).toEqual(['checkpoint-4', 'checkpoint-8']);
  }, 60_000);
});
