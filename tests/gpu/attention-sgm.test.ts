import { beforeAll, describe, expect, it } from 'vitest';
import { attentionForwardRef, type AttentionDims } from '../../src/kernels/attention.js';
import { attentionBackwardRef } from '../../src/kernels/attention-backward.js';
import { ATTENTION_SGM_DEFAULT_KEYS, ATTENTION_SGM_KEYS, AttentionSgm, attentionScaleDims, attentionScaleLayout, attentionSgmForwardSpec, attentionSgmUnsupportedReason } from '../../src/kernels/attention-sgm.js';
import { storageBufferCount } from '../../src/kernels/kernel.js';
import { ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS, AttentionSgmBackward, attentionDsScale } from '../../src/kernels/attention-sgm-backward.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { headScaleRef } from '../../src/kernels/head-scale.js';
import { roundToF16 } from '../../src/kernels/matmul-sgm.js';
import { compareArrays } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * Flash attention on subgroup matrices (issue 11 item 3) against float64. The references take the
 * operands as the kernels see them — each rounded to f16 after its head scale (headScaleRef's rule)
 * and scaled back — so what is left is the f16 rounding of P and dS and the f32 sums: bounds of a
 * few f16 ulps. Inputs of 1e5 and gradients of 1e-10 (issue 11 item 4) must stay inside the same
 * relative bounds. Runs where the adapter has f16→f32 subgroup matrices (the GPU host); the
 * layout and scale checks run everywhere.
 */
describe('subgroup-matrix attention: layout and dS scale', () => {
  it('the scale regions start at multiples of 64 floats and do not overlap', () => {
    for (const [B, Hkv] of [[1, 1], [4, 8], [3, 5], [16, 8]] as const) {
      const l = attentionScaleLayout(B, Hkv);
      const offs = [l.qOff, l.kOff, l.vOff, l.dOOff];
      for (const o of offs) expect(o % 64).toBe(0);
      for (let i = 1; i < 4; i++) expect(offs[i]! - offs[i - 1]!).toBeGreaterThanOrEqual(B * Hkv);
      expect(l.length - l.dOOff).toBeGreaterThanOrEqual(B * Hkv);
    }
  });

  it('dS scaled by attentionDsScale cannot pass 2^14: (2·Dh·2^28)·scale ≤ 2^14', () => {
    for (const dh of [32, 64, 96, 128]) {
      expect(2 * dh * 2 ** 28 * attentionDsScale(dh)).toBeLessThanOrEqual(2 ** 14);
      expect(2 * dh * 2 ** 28 * attentionDsScale(dh)).toBeGreaterThan(2 ** 12);
    }
  });
});

const gpu: Gpu = await testGpu();
const unsupported = attentionSgmUnsupportedReason(gpu, Math.max(storageBufferCount(attentionSgmForwardSpec), ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS));
if (unsupported) console.log(`SKIP subgroup-matrix attention: ${unsupported}`);

interface Case extends AttentionDims {
  readonly examples: number;
  readonly keys?: number;
  readonly qMag?: number;
  readonly vMag?: number;
  readonly dOMag?: number;
}

/** x rounded as the kernels stage it: f16(x·s)/s with s the head scale of its (batch row, group). */
function asStaged(x: Float32Array, which: 'q' | 'k' | 'v' | 'dO', c: AttentionDims): Float64Array {
  const d = attentionScaleDims(which, c);
  const s = headScaleRef(x, d);
  const out = new Float64Array(x.length);
  const width = d.heads * d.Dh;
  for (let n = 0; n < c.B * c.T; n++) {
    const b = Math.floor(n / c.T);
    for (let e = 0; e < width; e++) {
      const sc = s[b * d.heads + Math.floor(e / d.Dh)]!;
      out[n * width + e] = roundToF16(x[n * width + e]! * sc) / sc;
    }
  }
  return out;
}

function segments(c: Case): Int32Array {
  const seg = new Int32Array(c.B * c.T);
  for (let n = 0; n < seg.length; n++) seg[n] = Math.floor(((n % c.T) * c.examples) / c.T);
  return seg;
}

const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

const CASES: readonly Case[] = [
  { B: 2, T: 77, H: 4, Hkv: 2, Dh: 128, examples: 2 },
  { B: 1, T: 130, H: 2, Hkv: 1, Dh: 64, examples: 1, keys: 32 },
  { B: 3, T: 64, H: 6, Hkv: 3, Dh: 128, examples: 3, keys: 16 },
  { B: 1, T: 200, H: 8, Hkv: 2, Dh: 128, examples: 1, qMag: 30, vMag: 1e5, dOMag: 1e-10 },
  { B: 2, T: 96, H: 4, Hkv: 4, Dh: 96, examples: 1, vMag: 1e-10, dOMag: 1e5 },
  // five examples a row: query tiles whose first visible key lies mid-tile, past the first tiles (kStart)
  { B: 2, T: 300, H: 4, Hkv: 1, Dh: 128, examples: 5, keys: 16, qMag: 20 },
  { B: 1, T: 333, H: 2, Hkv: 2, Dh: 128, examples: 7, qMag: 25 },
];

describe.skipIf(unsupported !== undefined)('subgroup-matrix attention against float64', () => {
  const fwd = new Map<number, AttentionSgm>();
  let bwd128: AttentionSgmBackward;
  beforeAll(async () => {
    for (const keys of ATTENTION_SGM_KEYS) fwd.set(keys, await AttentionSgm.create(gpu, { headDim: 128, keys }));
    bwd128 = await AttentionSgmBackward.create(gpu, { headDim: 128 });
  });

  for (const c of CASES) {
    const name = `B=${c.B} T=${c.T} H=${c.H} Hkv=${c.Hkv} Dh=${c.Dh}, ${c.examples} example(s)/row, keys/tile ${c.keys ?? ATTENTION_SGM_DEFAULT_KEYS}` + (c.qMag ? `, |q|~${c.qMag}` : '') + (c.vMag ? `, |v|~${c.vMag}` : '') + (c.dOMag ? `, |dO|~${c.dOMag}` : '');
    const setup = () => {
      const N = c.B * c.T;
      const rng = new Rng(N * 31 + c.H);
      const q = rng.f32(N * c.H * c.Dh).map((x) => x * (c.qMag ?? 1));
      const k = rng.f32(N * c.Hkv * c.Dh);
      const v = rng.f32(N * c.Hkv * c.Dh).map((x) => x * (c.vMag ?? 1));
      const dO = rng.f32(N * c.H * c.Dh).map((x) => x * (c.dOMag ?? 1));
      const seg = segments(c);
      const qR = asStaged(q, 'q', c);
      const kR = asStaged(k, 'k', c);
      const vR = asStaged(v, 'v', c);
      const ref = attentionForwardRef(qR, kR, vR, seg, c);
      const layout = attentionScaleLayout(c.B, c.Hkv);
      const t = {
        o: gpu.tensor('o', [N, c.H * c.Dh], 'f32'),
        lse: gpu.tensor('lse', [N, c.H], 'f32'),
        q: gpu.tensorFrom('q', [N, c.H * c.Dh], 'f32', q),
        k: gpu.tensorFrom('k', [N, c.Hkv * c.Dh], 'f32', k),
        v: gpu.tensorFrom('v', [N, c.Hkv * c.Dh], 'f32', v),
        segIds: gpu.tensorFrom('seg', [N], 'i32', seg),
        scales: gpu.tensor('scales', [layout.length], 'f32'),
        dO: gpu.tensorFrom('dO', [N, c.H * c.Dh], 'f32', dO),
        dq: gpu.tensor('dq', [N, c.H * c.Dh], 'f32'),
        dk: gpu.tensor('dk', [N, c.Hkv * c.Dh], 'f32'),
        dv: gpu.tensor('dv', [N, c.Hkv * c.Dh], 'f32'),
        stats: gpu.tensor('stats', [N, c.H, 2], 'f32'),
      };
      for (const x of [t.o, t.lse, t.dq, t.dk, t.dv, t.stats, t.scales]) gpu.fill32(x, 0x7fc00000);
      return { q, dO, seg, qR, kR, vR, ref, t };
    };

    it(`${name}: forward o and lse within f16-rounding bounds`, async () => {
      const { vR, ref, t } = setup();
      const attn = c.Dh === 128 ? fwd.get(c.keys ?? ATTENTION_SGM_DEFAULT_KEYS)! : await AttentionSgm.create(gpu, { headDim: c.Dh, keys: c.keys });
      submitDispatches(gpu, attn.forward('attention', t, c));
      const [o, lse] = await Promise.all([gpu.readF32(t.o), gpu.readF32(t.lse)]);
      // o: P rounded to f16 (2^-11 relative) against Σ P·|v| ≤ max |v|
      const oCmp = compareArrays(o, ref.o, 0, 2 ** -9 * maxAbs(vR));
      const lseCmp = compareArrays(lse, ref.lse, 1e-5, 1e-5);
      for (const x of Object.values(t)) x.buffer.destroy();
      expect(oCmp.nanCount, 'o NaN').toBe(0);
      expect(oCmp.badCount, `o: worst ${oCmp.worstOut} vs ${oCmp.worstRef} at ${oCmp.worstIndex}`).toBe(0);
      expect(lseCmp.badCount, `lse: worst ${lseCmp.worstOut} vs ${lseCmp.worstRef} at ${lseCmp.worstIndex}`).toBe(0);
    });

    it(`${name}: backward dq, dk, dv within f16-rounding bounds (o and lse from float64)`, async () => {
      const { dO, seg, qR, kR, vR, ref, t } = setup();
      gpu.write(t.o, Float32Array.from(ref.o));
      gpu.write(t.lse, Float32Array.from(ref.lse));
      const back = c.Dh === 128 ? bwd128 : await AttentionSgmBackward.create(gpu, { headDim: c.Dh });
      submitDispatches(gpu, back.backward('attention backward', t, c));
      const [dq, dk, dv] = await Promise.all([t.dq, t.dk, t.dv].map((x) => gpu.readF32(x)));
      for (const x of Object.values(t)) x.buffer.destroy();
      const g = attentionBackwardRef(asStaged(dO, 'dO', c), qR, kR, vR, seg, c);
      for (const [label, out, r] of [['dq', dq, g.dq], ['dk', dk, g.dk], ['dv', dv, g.dv]] as const) {
        const cmp = compareArrays(out, r, 0, 1e-2 * maxAbs(r));
        expect(cmp.nanCount, `${label} NaN`).toBe(0);
        expect(cmp.badCount, `${label}: worst ${cmp.worstOut} vs ${cmp.worstRef} at ${cmp.worstIndex}, rel norm ${cmp.relNorm}`).toBe(0);
        expect(cmp.relNorm, label).toBeLessThan(4e-3);
      }
    });
  }
});
