import { describe, expect, it } from 'vitest';
import { buildBatch, planBatches } from '../../src/data/batching.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { Trainer } from '../../src/train/trainer.js';
import { padBatch } from '../../src/train/pad-batch.js';
import { compareArrays, expectRelNorm } from '../helpers/compare.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * Packing cannot contaminate (the seed's v6 bug): three examples packed best-fit into rows give,
 * on the GPU model (NF4 base + adapter), the same per-token losses as each example run alone;
 * and gradient accumulation weighs every target token equally (two micro-batches = one batch).
 */
describe('packing and accumulation on the GPU', () => {
  const rng = new Rng(99);
  const example = (n: number, prompt: number) => ({
    ids: Int32Array.from({ length: n }, () => rng.int(0, 151643)),
    loss: Uint8Array.from({ length: n }, (_, i) => (i >= prompt ? 1 : 0)),
  });
  const examples = [example(13, 4), example(9, 3), example(7, 2)];
  const T = 24;

  it('packed rows give each example the losses it has alone; without segment ids they differ', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const plan = planBatches(examples, { batchSize: 2, maxSeqLength: T, packing: true, groupByLength: false, seed: 1, padTokenId: 151643 });
    const packed = padBatch(buildBatch(examples, plan, [0, 1].slice(0, plan.rows.length)), 2, T, 151643);
    expect(packed.examples.length).toBe(3);
    // at least one row really holds two examples
    expect(new Set(packed.examples.map((e) => e.row)).size).toBeLessThan(3);
    const run = async (b: typeof packed) => (await model.forward(b, { adapter, captureLayers: true })).tokenLoss!;
    const packedLoss = await run(packed);
    const merged = await run({ ...packed, segmentIds: new Int32Array(packed.segmentIds.length), positionIds: Int32Array.from({ length: 2 * T }, (_, i) => i % T) });
    let contaminated = 0;
    for (const e of packed.examples) {
      const ex = examples[e.index];
      const alone = padBatch(buildBatch([ex], planBatches([ex], { batchSize: 1, maxSeqLength: T, packing: false, groupByLength: false, seed: 1, padTokenId: 151643, padToMultipleOf: 1 }), [0]), 1, ex.ids.length, 151643);
      const aloneLoss = await run(alone);
      const n = ex.ids.length - 1; // positions scoring a next token inside the example
      const inPack = packedLoss.subarray(e.row * T + e.offset, e.row * T + e.offset + n);
      // The same math on other tile boundaries: f32 rounding only.
      expectRelNorm(`example ${e.index} packed vs alone`, inPack, aloneLoss.subarray(0, n), 1e-5);
      if (e.offset > 0) {
        const m = compareArrays(merged.subarray(e.row * T + e.offset, e.row * T + e.offset + n), aloneLoss.subarray(0, n), 0, 0);
        if (m.relNorm > 1e-3) contaminated++;
      }
    }
    // The negative control: letting attention cross examples changes the later examples' losses.
    expect(contaminated).toBeGreaterThan(0);
  });

  it('two micro-batches accumulate to the gradient of the whole batch (weighted by target tokens)', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
    const plan = planBatches(examples, { batchSize: 2, maxSeqLength: T, packing: false, groupByLength: false, seed: 1, padTokenId: 151643, fixedLength: true });
    const whole = buildBatch(examples, { ...plan, options: { ...plan.options, batchSize: 3 } }, [0, 1, 2]);
    const part1 = buildBatch(examples, plan, [0, 1]);
    const part2 = padBatch(buildBatch(examples, plan, [2]), 2, T, 151643);
    const grads = async (batches: (typeof whole)[], B: number) => {
      const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
      const trainer = await Trainer.create(gpu, model, adapter, { B, T, checkpointing: true, optimizer: { kind: 'adamw' }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 0 });
      for (const b of batches) trainer.accumulate(b);
      const g = await trainer.readGradients();
      trainer.destroy();
      return g;
    };
    const one = await grads([whole], 3);
    const two = await grads([part1, part2], 2);
    // example targets differ (12 − 4 + … ): a mean of the two micro-batch means would not match
    expect(part1.targets).not.toBe(whole.targets - part1.targets);
    for (const [key, g] of one) expectRelNorm(`accumulated ${key}`, two.get(key)!, g, 1e-5);
  });
});
