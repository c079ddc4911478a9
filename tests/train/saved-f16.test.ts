import { beforeAll, describe, expect, it } from 'vitest';
import { parseQwen3Config } from '../../src/model/config.js';
import { planMicroBatch, savesF16 } from '../../src/train/step-plan.js';
import { F16_SAVED } from '../../src/model/decoder-layer.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { compareArrays, expectRelNorm } from '../helpers/compare.js';
import { readReference } from '../helpers/fixtures.js';
import { tinyGradients } from '../helpers/tiny-gradients.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Saved activations in f16 (issue 11 item 4: Saved.packed — the attention's q, k, v after norm and
 * rope and its output, the MLP's gate and up, each row with its power-of-two scale; act recomputed
 * in the backward): on by default on the tensor-core path, forced on here on lavapipe's f32 path.
 * The forward is untouched (the loss is bit for bit the f32-saved run's); the gradients carry one
 * f16 rounding of each (2^-11 relative) and stay within TOL of the f32-saved run's and of PEFT's
 * (float32). Every layer saved, and one of the two recomputed (the f16 layer then unpacks into the
 * recomputed layers' shared set).
 */
const TOL = 3e-3;

describe('saved activations in f16', () => {
  let ref: Awaited<ReturnType<typeof readReference>>;
  beforeAll(async () => {
    ref = await readReference();
  });

  const gradients = (recompute: RecomputePolicy, savedF16: boolean) => tinyGradients(ref, { base: 'full', recompute, savedF16 });

  for (const recompute of ['none', { checkpointLayers: 1 }] as const) {
    it(`recompute ${JSON.stringify(recompute)}: the same loss, every LoRA gradient within f16 rounding of the f32-saved run's and of PEFT's`, async () => {
      const f32 = await gradients(recompute, false);
      const f16 = await gradients(recompute, true);
      for (const key of F16_SAVED) expect(f16.planned.some((n) => n.startsWith(`saved ${key} (N, `) && n.endsWith(' f16')), key).toBe(true);
      expect(f32.planned.some((n) => n.includes('f16'))).toBe(false);
      expect(f16.loss).toBe(f32.loss);
      expect(f16.grads.size).toBe(28);
      let differs = 0;
      for (const [key, g] of f32.grads) {
        const h = f16.grads.get(key)!;
        expectRelNorm(`f16-saved vs f32-saved: ${key}`, h, g, TOL);
        expectRelNorm(`f16-saved vs PEFT: ${key}`, h, ref.get(`lora_bf16.grad.${key}`)!.data, TOL);
        if (h.some((v, i) => v !== g[i])) differs++;
      }
      const worst = Math.max(...[...f32.grads].map(([key, g]) => compareArrays(f16.grads.get(key)!, g, 0, 0).relNorm));
      console.log(`recompute ${JSON.stringify(recompute)}: worst LoRA gradient, f16-saved vs f32-saved, rel norm ${worst.toExponential(2)} (tolerance ${TOL})`);
      // the f16 copies are really what the backward read: some gradient moved
      expect(differs).toBeGreaterThan(0);
    }, 120_000);
  }
});

describe('the plan of f16 saved activations', () => {
  const c = parseQwen3Config(JSON.parse(readFileSync(join('configs', 'models', 'qwen3-4b.json'), 'utf8')), 'qwen3-4b.json');
  const base = { batch: 4, seq: 512, r: 32, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const, loraDropout: 0, lossHead: 'chunked' as const, lossChunkTokens: 1024 };
  const bytes = (savedF16: boolean, recompute: RecomputePolicy) =>
    planMicroBatch(c, { ...base, recompute, compute: 'tensor-cores', savedF16 }).reduce((a, b) => a + b.bytes * b.count, 0);

  it('is on by default on the tensor-core path only', () => {
    expect(savesF16({ compute: 'tensor-cores' })).toBe(true);
    expect(savesF16({ compute: 'f32' })).toBe(false);
    expect(savesF16({})).toBe(false);
    expect(savesF16({ compute: 'tensor-cores', savedF16: false })).toBe(false);
  });

  it('counts each saved layer smaller by half the bytes of the f16 activations, less their row scales, plus all of act; one f32 scratch set where nothing is recomputed', () => {
    const N = 4 * 512;
    const { intermediateSize: F, hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, numHiddenLayers: L } = c;
    void D;
    const widths = { qn: H * Dh, kn: Hkv * Dh, v: Hkv * Dh, attn: H * Dh, gate: F, up: F };
    const f16Floats = F16_SAVED.reduce((a, key) => a + widths[key], 0);
    const perLayer = N * f16Floats * 2 - F16_SAVED.length * N * 4 + N * F * 4;
    const scratch = N * (f16Floats + F) * 4;
    // nothing recomputed: every layer in f16, one f32 scratch set added
    expect(bytes(false, 'none') - bytes(true, 'none')).toBe(L * perLayer - scratch);
    // 27 layers recomputed: the 9 saved ones in f16, the shared set serving as their scratch
    expect(bytes(false, { checkpointLayers: 27 }) - bytes(true, { checkpointLayers: 27 })).toBe(9 * perLayer);
    // everything recomputed: nothing saved, nothing packed
    expect(bytes(false, 'full')).toBe(bytes(true, 'full'));
  });
});
