import { beforeAll, describe, expect, it } from 'vitest';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { loadLoraAdapter, peftKey } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { Trainer } from '../../src/train/trainer.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * Loss and all 28 LoRA gradients against PEFT (../shared/fixtures/qwen3-tiny: transformers + PEFT,
 * float32, train mode, dropout 0), each within 1e-4 relative (‖g − ref‖ / ‖ref‖), for the
 * full-precision base (lora_bf16.*) and the NF4 base (lora_nf4.*), with and without gradient
 * checkpointing (which must agree with each other to 1e-6).
 */
const TOL = 1e-4;

describe('LoRA gradients match PEFT', () => {
  let ref: Awaited<ReturnType<typeof readReference>>;
  let B: number;
  let T: number;
  let batch: { inputIds: Int32Array; labels: Int32Array; positionIds: Int32Array; segmentIds: Int32Array };
  beforeAll(async () => {
    ref = await readReference();
    [B, T] = ref.get('input_ids')!.shape;
    batch = {
      inputIds: ref.get('input_ids')!.i32!,
      labels: ref.get('labels')!.i32!,
      positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
      segmentIds: new Int32Array(B * T),
    };
  });

  const gradients = async (base: 'full' | 'nf4', checkpointing: boolean) => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const trainer = await Trainer.create(gpu, model, adapter, {
      B,
      T,
      checkpointing,
      optimizer: { kind: 'adamw' },
      hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
      maxGradNorm: 1,
    });
    const targets = trainer.accumulate({ B, T, ...batch, examples: [], targets: 0 });
    const loss = (await trainer.readLossSum()) / targets;
    const grads = await trainer.readGradients();
    trainer.destroy();
    return { loss, grads };
  };

  for (const [base, prefix] of [['full', 'lora_bf16'], ['nf4', 'lora_nf4']] as const) {
    it(`${base} base: loss and the 28 gradients (${prefix}.*), checkpointing on and off`, async () => {
      const on = await gradients(base, true);
      expectRelNorm(`${prefix}.loss`, [on.loss], ref.get(`${prefix}.loss`)!.data, TOL);
      let checked = 0;
      for (let l = 0; l < 2; l++) {
        for (const p of PROJECTIONS) {
          for (const w of ['A', 'B'] as const) {
            const key = peftKey(l, p, w);
            const expected = ref.get(`${prefix}.grad.${key}`);
            expect(expected, `reference has ${prefix}.grad.${key}`).toBeDefined();
            expectRelNorm(`${prefix}.grad.${key}`, on.grads.get(key)!, expected!.data, TOL);
            checked++;
          }
        }
      }
      expect(checked).toBe(28);
      const off = await gradients(base, false);
      expect(off.loss).toBe(on.loss);
      for (const [key, g] of on.grads) expectRelNorm(`checkpointing off vs on: ${key}`, off.grads.get(key)!, g, 1e-6);
    });
  }
});
