import { beforeAll, describe, expect, it } from 'vitest';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { peftKey } from '../../src/model/lora.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference } from '../helpers/fixtures.js';
import { tinyGradients } from '../helpers/tiny-gradients.js';

/**
 * Loss and all 28 LoRA gradients against PEFT (../shared/fixtures/qwen3-tiny: transformers + PEFT,
 * float32, train mode, dropout 0), each within 1e-4 relative (‖g − ref‖ / ‖ref‖), for the
 * full-precision base (lora_bf16.*) and the NF4 base (lora_nf4.*), with and without gradient
 * checkpointing (which must agree with each other to 1e-6).
 */
const TOL = 1e-4;

describe('LoRA gradients match PEFT', () => {
  let ref: Awaited<ReturnType<typeof readReference>>;
  beforeAll(async () => {
    ref = await readReference();
  });

  const gradients = (base: 'full' | 'nf4', checkpointing: boolean) => tinyGradients(ref, { base, recompute: checkpointing ? 'full' : 'none' });

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
