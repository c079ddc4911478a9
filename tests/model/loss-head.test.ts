import { beforeAll, describe, expect, it } from 'vitest';
import { IGNORE_INDEX } from '../../src/labels.js';
import { fusedHeadUnsupported } from '../../src/kernels/cross-entropy-fused.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { shiftTargets } from '../../src/model/forward.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { createTrainKernels } from '../../src/train/kernels.js';
import { moveLoraToArena } from '../../src/train/param-arena.js';
import { TrainStep } from '../../src/train/step.js';
import { expectClose, expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The two loss heads (src/model/loss-head.ts) on the fixture model + adapter: the fused head of CPU
 * adapters must give the chunked head's loss, token accuracy, per-position losses and LoRA
 * gradients. (The chunked head is checked against transformers + PEFT in fixture-forward and
 * fixture-grads; on lavapipe those tests run the fused head, so both heads meet the fixtures.)
 */
const gpuHasFused = await testGpu().then((g) => fusedHeadUnsupported(g) === undefined);

describe.skipIf(!gpuHasFused)('fused and chunked loss heads agree (fixture model)', () => {
  let B: number;
  let T: number;
  let batch: { inputIds: Int32Array; labels: Int32Array; positionIds: Int32Array; segmentIds: Int32Array };
  beforeAll(async () => {
    const ref = await readReference();
    [B, T] = ref.get('input_ids')!.shape;
    const labels = ref.get('labels')!.i32!.slice();
    batch = {
      inputIds: ref.get('input_ids')!.i32!,
      labels,
      positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
      segmentIds: new Int32Array(B * T),
    };
  });

  it('forward: loss, correct count and per-position losses', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const run = async (lossHead: 'fused' | 'chunked') => {
      const program = model.program({ B, T, captureLayers: true, lossHead }, adapter);
      expect(program.shape.lossHead).toBe(lossHead);
      const r = await program.run(batch);
      program.destroy();
      return r;
    };
    const auto = model.program({ B, T }, adapter);
    expect(auto.shape.lossHead).toBe('fused');
    auto.destroy();
    const fused = await run('fused');
    const chunked = await run('chunked');
    const targets = shiftTargets(batch.labels, batch.segmentIds, B, T);
    expect(fused.targets).toBe(targets.filter((t) => t !== IGNORE_INDEX).length);
    expect(fused.targets).toBe(chunked.targets);
    // f32 sums of the same terms in another order
    expect(Math.abs(fused.loss - chunked.loss)).toBeLessThan(1e-5 * chunked.loss);
    expectClose('token loss', fused.tokenLoss!, chunked.tokenLoss!, 1e-5, 1e-5);
    expect(fused.correct).toBe(chunked.correct);
    expect(fused.accuracy).toBe(chunked.correct / chunked.targets);
  });

  it('train step: loss, correct count and all LoRA gradients', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const kernels = await createTrainKernels(gpu, model.config, model.kernels);
    const run = async (lossHead: 'fused' | 'chunked') => {
      const arena = moveLoraToArena(gpu, 'lora', await loadLoraAdapter(gpu, TINY_ADAPTER, model.config), { destroySource: true });
      const step = TrainStep.build(gpu, kernels, model.weights, arena.adapter, arena.grads, { B, T, checkpointing: true, lossHead });
      expect(step.shape.lossHead).toBe(lossHead);
      const n = step.upload(batch);
      const enc = gpu.device.createCommandEncoder();
      arena.arena.encodeClearGrads(enc);
      step.encode(enc);
      gpu.device.queue.submit([enc.finish()]);
      const out = { n, loss: await step.readLossSum(), correct: await step.readCorrectCount(), grads: await gpu.readF32(arena.arena.grads) };
      step.destroy();
      return out;
    };
    const fused = await run('fused');
    const chunked = await run('chunked');
    expect(fused.n).toBe(chunked.n);
    expect(Math.abs(fused.loss - chunked.loss)).toBeLessThan(1e-5 * chunked.loss);
    expect(fused.correct).toBe(chunked.correct);
    // dlogits·E summed over the vocabulary in another order
    expectRelNorm('LoRA gradients, fused vs chunked head', fused.grads, chunked.grads, 1e-5);
  });

  it('rejects a label outside the vocabulary in a training batch, naming the position', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const kernels = await createTrainKernels(gpu, model.config, model.kernels);
    const arena = moveLoraToArena(gpu, 'lora', await loadLoraAdapter(gpu, TINY_ADAPTER, model.config), { destroySource: true });
    const step = TrainStep.build(gpu, kernels, model.weights, arena.adapter, arena.grads, { B, T, checkpointing: true });
    const labels = batch.labels.slice();
    labels[3] = model.config.vocabSize + 5;
    expect(() => step.upload({ ...batch, labels })).toThrow(new RegExp(`train step: the target at position 2 is ${model.config.vocabSize + 5}`));
    step.destroy();
  });
});
