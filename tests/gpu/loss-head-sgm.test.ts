import { describe, expect, it } from 'vitest';
import { IGNORE_INDEX } from '../../src/labels.js';
import { CrossEntropy } from '../../src/kernels/cross-entropy.js';
import { submitDispatches, timeDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { Matmul, type LinearWeight } from '../../src/kernels/matmul.js';
import { MatmulBackward } from '../../src/kernels/matmul-backward.js';
import { roundToF16, sgmRelBound } from '../../src/kernels/matmul-sgm.js';
import { SumReduce } from '../../src/kernels/reduce.js';
import { rowScaleRef } from '../../src/kernels/row-scale.js';
import { tensorView, type Tensor } from '../../src/kernels/tensor.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../../src/model/bf16.js';
import { allocatePlan } from '../../src/model/buffer-plan.js';
import { tensorCoreUnsupportedReason } from '../../src/model/compute-path.js';
import { chooseLossHeadFor, HEAD_BUFFERS, LossHead, lossHeadPlan, type LossHeadKernels } from '../../src/model/loss-head.js';
import { createTensorCoreKernels } from '../../src/model/tensor-core-kernels.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * The chunked loss head with its lm_head on subgroup matrices (src/model/loss-head.ts, the
 * tensor-core path) against the same head on the f32 path, at Qwen3-4B's width: the real
 * vocabulary V = 151,936, D = 2560, a random bf16 lm_head (uniform in ±0.035, tiny elements
 * included), N = 100 rows of xf whose magnitudes run from 1e-5 to 1e5 (and a zero row), so the
 * row scales matter. Every logit, every position's loss, "argmax = target" where the logits leave
 * no doubt, and every element of dxf must lie within bounds built from the f16 roundings the
 * tensor-core kernels make (sgmRelBound), with the sums of |terms| they scale with computed on the
 * GPU by the f32 matmuls over |x| and |E|. The bound construction is checked first in float64
 * against a simulation of those roundings (pure TypeScript, runs everywhere); the GPU part runs
 * where the adapter has f16→f32 subgroup matrices (the GPU host) and skips elsewhere.
 */

const U = 2 ** -24;

/**
 * Bound on |z_tc − z_f32| for logit (i, j): the tensor-core matmul's f16 error (sgmRelBound over D,
 * relative to A = Σ_k |x_ik·E_jk|, plus 2^-25 absolute per f16-subnormal operand: E's row sum C_j
 * over the row scale s_i for x, and Σ_k |x_ik| for E) and the f32 path's own accumulation (D·2^-24·A).
 */
function logitBound(A: number, C: number, s: number, xAbs: number, D: number): number {
  return (sgmRelBound('bf16', D) + D * U) * A * 1.001 + 2 ** -25 * (C / s + xAbs);
}

/**
 * Bound on |dX_tc − dX_f32| for element (i, k), given B1 = Σ_j |g_tc − g_f32|·|E_jk| (the two
 * paths' dlogits differ where their logits do), B2 = Σ_j |g_tc|·|E_jk|, E's column sum colAbs_k,
 * the row scale sg of g_tc and G = Σ_j |g_tc|: the f16 input gradient's error (sgmRelBound over V,
 * relative to B2, plus the subnormal terms), the f32 path's accumulation over V (relative to
 * Σ|g_f32||E| ≤ B1 + B2), and 1 % for B1 and B2 themselves being f32 sums.
 */
function dxBound(B1: number, B2: number, colAbs: number, sg: number, G: number, V: number): number {
  return 1.01 * (B1 * (1 + V * U) + (sgmRelBound('bf16', V) + V * U) * B2) + 2 ** -25 * (colAbs / sg + G);
}

/** Row-wise log-softmax pieces in float64: lse and p = exp(z − lse). */
function softmaxRow(z: ArrayLike<number>): { lse: number; p: Float64Array } {
  let max = -Infinity;
  for (let j = 0; j < z.length; j++) max = Math.max(max, z[j]);
  let sum = 0;
  for (let j = 0; j < z.length; j++) sum += Math.exp(z[j] - max);
  const lse = max + Math.log(sum);
  return { lse, p: Float64Array.from(z, (v) => Math.exp(v - lse)) };
}

/** Row magnitudes of xf: f16 would underflow the first unscaled and overflow the last. */
const MAGS = [1e-5, 0.01, 1, 30, 1e5];

// Pure TypeScript: runs everywhere (lavapipe, CI).
describe('tensor-core loss head: the error bounds', () => {
  it('cover a float64 simulation of the roundings (xf and dlogits rows scaled to f16, E to f16) for logits, loss and dX', () => {
    const rng = new Rng(23);
    const [N, D, V] = [6, 128, 300];
    const w = Float64Array.from({ length: V * D }, (_, e) => bf16BitsToF32(f32ToBf16Bits(e % 97 === 5 ? 3e-6 : (rng.next() * 2 - 1) * 0.035)));
    const x = Float64Array.from({ length: N * D }, (_, e) => (Math.floor(e / D) === 4 ? 0 : rng.normal() * MAGS[Math.floor(e / D) % MAGS.length]));
    const target = (i: number): number => (i * 37) % V;
    const w16 = w.map(roundToF16);
    const s = rowScaleRef(x, N, D);
    const C = new Float64Array(V);
    const colAbs = new Float64Array(D);
    for (let j = 0; j < V; j++) for (let k = 0; k < D; k++) {
      C[j] += Math.abs(w[j * D + k]);
      colAbs[k] += Math.abs(w[j * D + k]);
    }
    let checked = 0;
    for (let i = 0; i < N; i++) {
      const xs = x.subarray(i * D, (i + 1) * D);
      const x16 = xs.map((v) => roundToF16(v * s[i]));
      const xAbs = xs.reduce((a, v) => a + Math.abs(v), 0);
      const zTc = new Float64Array(V);
      const zRef = new Float64Array(V);
      let maxBound = 0;
      for (let j = 0; j < V; j++) {
        let a = 0;
        for (let k = 0; k < D; k++) {
          zTc[j] += x16[k] * w16[j * D + k];
          zRef[j] += xs[k] * w[j * D + k];
          a += Math.abs(xs[k] * w[j * D + k]);
        }
        zTc[j] /= s[i];
        const b = logitBound(a, C[j], s[i], xAbs, D);
        expect(Math.abs(zTc[j] - zRef[j]), `logit (${i}, ${j})`).toBeLessThanOrEqual(b);
        maxBound = Math.max(maxBound, b);
      }
      const tc = softmaxRow(zTc);
      const ref = softmaxRow(zRef);
      const t = target(i);
      expect(Math.abs(tc.lse - zTc[t] - (ref.lse - zRef[t])), `loss ${i}`).toBeLessThanOrEqual(2 * maxBound);
      // dlogits g = p − onehot; the tensor-core dX stages f16(g·sg) and E as f16
      const gTc = tc.p.map((v, j) => v - (j === t ? 1 : 0));
      const gRef = ref.p.map((v, j) => v - (j === t ? 1 : 0));
      const sg = rowScaleRef(gTc, 1, V)[0];
      const g16 = gTc.map((v) => roundToF16(v * sg));
      const G = gTc.reduce((a, v) => a + Math.abs(v), 0);
      for (let k = 0; k < D; k++) {
        let dTc = 0;
        let dRef = 0;
        let B1 = 0;
        let B2 = 0;
        for (let j = 0; j < V; j++) {
          dTc += g16[j] * w16[j * D + k];
          dRef += gRef[j] * w[j * D + k];
          B1 += Math.abs(gTc[j] - gRef[j]) * Math.abs(w[j * D + k]);
          B2 += Math.abs(gTc[j] * w[j * D + k]);
        }
        expect(Math.abs(dTc / sg - dRef), `dX (${i}, ${k})`).toBeLessThanOrEqual(dxBound(B1, B2, colAbs[k], sg, G, V));
        checked++;
      }
    }
    expect(checked).toBe(N * D);
  });
});

const gpu: Gpu = await testGpu();
const unsupported = tensorCoreUnsupportedReason(gpu);
if (unsupported) console.log(`SKIP tensor-core loss head: ${unsupported}`);

describe.skipIf(unsupported !== undefined)('tensor-core loss head vs the f32 head at Qwen3-4B width (V = 151936, D = 2560, bf16 lm_head)', () => {
  it('logits, loss, argmax = target, dxf within the f16 bounds; two chunks as one', async () => {
    const [N, D, V] = [100, 2560, 151936];
    const rng = new Rng(7);
    // E (V, D) bf16 and |E|, E's row and column sums of |E|
    const bits = new Uint16Array(V * D);
    const absBits = new Uint16Array(V * D);
    const C = new Float64Array(V);
    const colAbs = new Float64Array(D);
    // a row at a time: f32 values, their bf16 bits (f32ToBf16Bits's rounding, no NaN here), |value| by table
    const row = new Float32Array(D);
    const rowBits = new Uint32Array(row.buffer);
    const absOf = Float64Array.from({ length: 0x8000 }, (_, b) => bf16BitsToF32(b));
    for (let j = 0; j < V; j++) {
      for (let k = 0; k < D; k++) row[k] = (rng.next() * 2 - 1) * 0.035;
      let c = 0;
      for (let k = 0; k < D; k++) {
        const u = rowBits[k];
        const b = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
        bits[j * D + k] = b;
        absBits[j * D + k] = b & 0x7fff;
        const a = absOf[b & 0x7fff];
        c += a;
        colAbs[k] += a;
      }
      C[j] = c;
    }
    const w: LinearWeight = { format: 'bf16', nOut: V, k: D, data: gpu.tensorFrom('lm_head E', [V, D], 'bf16x2', bits) };
    const absW: LinearWeight = { format: 'bf16', nOut: V, k: D, data: gpu.tensorFrom('|E|', [V, D], 'bf16x2', absBits) };
    const xv = new Float32Array(N * D);
    for (let i = 0; i < N; i++) if (i !== 7) for (let k = 0; k < D; k++) xv[i * D + k] = rng.normal() * MAGS[i % MAGS.length];
    const xf = gpu.tensorFrom('xf', [N, D], 'f32', xv);
    const s = rowScaleRef(xv, N, D);
    const xAbs = Float64Array.from({ length: N }, (_, i) => xv.subarray(i * D, (i + 1) * D).reduce((a, v) => a + Math.abs(v), 0));

    const matmul = await Matmul.create(gpu);
    const matmulBackward = await MatmulBackward.create(gpu);
    const f32: LossHeadKernels = { matmul, matmulBackward, crossEntropy: await CrossEntropy.create(gpu), sum: await SumReduce.create(gpu) };
    // NF4 projections: the lm_head's bf16 comes with the default headFormats
    const cores: LossHeadKernels = { ...f32, tensorCores: await createTensorCoreKernels(gpu, { formats: ['nf4'], backward: true }) };

    const run = async (k: LossHeadKernels, targets: Int32Array, backward: boolean, chunk: number) => {
      const choice = chooseLossHeadFor(gpu, k, w, { N, backward, lossChunkTokens: chunk });
      const bufs = allocatePlan(gpu, lossHeadPlan(N, V, D, choice, backward));
      const logits = bufs.one(HEAD_BUFFERS.logits);
      gpu.fill32(logits, NAN_WORD);
      const dxf = backward ? gpu.tensor('dxf', [N, D], 'f32') : undefined;
      if (dxf) gpu.fill32(dxf, NAN_WORD);
      const head = LossHead.build(gpu, k, w, xf, dxf, { N, backward }, choice, bufs);
      head.setTargets(targets, 'tensor-core loss head test');
      submitDispatches(gpu, head.dispatches);
      // the logits buffer holds the last chunk's logits (forward) or dlogits (backward)
      const lastRows = N - Math.floor((N - 1) / chunk) * chunk;
      const out = {
        matmul: head.matmul,
        logits: await gpu.readF32(tensorView(logits.buffer, 'logits', [lastRows, V], 'f32', logits.offset)),
        tokenLoss: await gpu.readF32(head.tokenLoss),
        correct: await gpu.readF32(head.correct),
        sums: await head.readSums(),
        dxf: dxf ? await gpu.readF32(dxf) : undefined,
        seconds: backward ? await timeDispatches(gpu, head.dispatches, 3, 1) : 0,
      };
      dxf?.buffer.destroy();
      bufs.destroy();
      return out;
    };

    // targets: the f32 argmax for even rows (so "correct" is tested), none for every 7th from 3, random otherwise
    const probe = await run(f32, new Int32Array(N).fill(IGNORE_INDEX), false, 128);
    const targets = Int32Array.from({ length: N }, (_, i) => {
      if (i % 7 === 3) return IGNORE_INDEX;
      if (i % 2 === 1) return rng.int(0, V);
      let best = 0;
      for (let j = 1; j < V; j++) if (probe.logits[i * V + j] > probe.logits[i * V + best]) best = j;
      return best;
    });

    // --- forward: logits, loss, correct (one chunk of 128 holds all 100 rows)
    const fRef = await run(f32, targets, false, 128);
    const fTc = await run(cores, targets, false, 128);
    expect(fRef.matmul).toBe('f32');
    expect(fTc.matmul).toBe('tensor-cores');
    const A = gpu.tensor('Σ|x·E|', [N, V], 'f32');
    submitDispatches(gpu, [matmul.forward('Σ|x·E|', { y: A, x: gpu.tensorFrom('|xf|', [N, D], 'f32', xv.map(Math.abs)), w: absW })]);
    const a = await gpu.readF32(A);
    A.buffer.destroy();
    let bad = 0;
    let worst = 0;
    let firstBad = '';
    let decided = 0;
    for (let i = 0; i < N; i++) {
      let maxBound = 0;
      let top1 = -Infinity;
      let top2 = -Infinity;
      for (let j = 0; j < V; j++) {
        const e = i * V + j;
        const b = logitBound(a[e], C[j], s[i], xAbs[i], D);
        const err = Math.abs(fTc.logits[e] - fRef.logits[e]);
        if (!(err <= b)) {
          if (bad++ === 0) firstBad = `logit (${i}, ${j}): ${fTc.logits[e]} vs ${fRef.logits[e]}, allowed ±${b}`;
        } else worst = Math.max(worst, err / b);
        maxBound = Math.max(maxBound, b);
        const z = fRef.logits[e];
        if (z > top1) [top1, top2] = [z, top1];
        else if (z > top2) top2 = z;
      }
      const what = `row ${i} (|x| ~ ${MAGS[i % MAGS.length]}${i === 7 ? ', zero' : ''})`;
      // loss = lse − z_target moves by at most twice the largest logit error (and the f32 cross-entropy's rounding)
      expect(Math.abs(fTc.tokenLoss[i] - fRef.tokenLoss[i]), `loss, ${what}`).toBeLessThanOrEqual(2 * maxBound + 1e-5 * (1 + Math.abs(fRef.tokenLoss[i])));
      if (targets[i] === IGNORE_INDEX) {
        expect([fTc.tokenLoss[i], fTc.correct[i]], what).toEqual([0, 0]);
      } else if (top1 - top2 > 2 * maxBound) {
        expect(fTc.correct[i], `correct, ${what}`).toBe(fRef.correct[i]);
        if (fRef.correct[i] === 1) decided++;
      }
    }
    if (bad > 0) throw new Error(`${bad} logits outside the bound; first ${firstBad}`);
    expect(decided, 'rows whose argmax = target the bounds decide').toBeGreaterThan(0);
    expect(Math.abs(fTc.sums.loss - fRef.sums.loss)).toBeLessThanOrEqual(fRef.tokenLoss.reduce((t, v, i) => t + Math.abs(v - fTc.tokenLoss[i]), 0) + 1e-5 * Math.abs(fRef.sums.loss));

    // --- backward: dxf (one chunk), then the same in two chunks (64 + 36)
    const bRef = await run(f32, targets, true, 128);
    const bTc = await run(cores, targets, true, 128);
    const b2 = await run(cores, targets, true, 64);
    expect(bTc.matmul).toBe('tensor-cores');
    for (const [name, r] of [['one chunk', bTc], ['two chunks', b2]] as const) {
      for (let i = 0; i < N; i++) expect(Math.abs(r.tokenLoss[i] - fTc.tokenLoss[i]), `${name}: loss ${i}, as in the forward`).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(fTc.tokenLoss[i])));
    }
    const gTc = bTc.logits;
    const gRef = bRef.logits;
    const absTensor = (label: string, f: (e: number) => number): Tensor => gpu.tensorFrom(label, [N, V], 'f32', Float32Array.from({ length: N * V }, (_, e) => f(e)));
    const sums = async (label: string, dy: Tensor): Promise<Float32Array> => {
      const out = gpu.tensor(label, [N, D], 'f32');
      submitDispatches(gpu, matmulBackward.inputSplit(label, { dx: out, dy, w: absW }));
      const v = await gpu.readF32(out);
      out.buffer.destroy();
      dy.buffer.destroy();
      return v;
    };
    const B1 = await sums('Σ|Δg|·|E|', absTensor('|Δg|', (e) => Math.abs(gTc[e] - gRef[e])));
    const B2 = await sums('Σ|g|·|E|', absTensor('|g|', (e) => Math.abs(gTc[e])));
    const sg = rowScaleRef(gTc, N, V);
    bad = 0;
    firstBad = '';
    let tight = 0;
    let rows = 0;
    for (let i = 0; i < N; i++) {
      const G = gTc.subarray(i * V, (i + 1) * V).reduce((t, v) => t + Math.abs(v), 0);
      let mag = 0;
      let tol = 0;
      for (let k = 0; k < D; k++) {
        const e = i * D + k;
        const b = dxBound(B1[e], B2[e], colAbs[k], sg[i], G, V);
        const err = Math.abs(bTc.dxf![e] - bRef.dxf![e]);
        if (!(err <= b) && bad++ === 0) firstBad = `dxf (${i}, ${k}): ${bTc.dxf![e]} vs ${bRef.dxf![e]}, allowed ±${b}`;
        // two chunks: the same f16 products summed in other slices (two f32 sums over V)
        const err2 = Math.abs(b2.dxf![e] - bTc.dxf![e]);
        const b2Bound = 2 * V * U * 1.01 * B2[e] + 1e-30;
        if (!(err2 <= b2Bound) && bad++ === 0) firstBad = `two-chunk dxf (${i}, ${k}): ${b2.dxf![e]} vs ${bTc.dxf![e]}, allowed ±${b2Bound}`;
        mag += Math.abs(bRef.dxf![e]);
        tol += b;
      }
      if (targets[i] === IGNORE_INDEX) {
        expect(bTc.dxf!.subarray(i * D, (i + 1) * D).every((v) => v === 0), `dxf row ${i} without a target`).toBe(true);
      } else {
        rows++;
        if (tol < mag / 5) tight++;
      }
    }
    if (bad > 0) throw new Error(`${bad} dxf elements outside the bound; first ${firstBad}`);
    // the bound means something: well below the gradient in most rows (a row whose argmax differs between the paths widens its own)
    expect(tight, `rows whose dxf bound is under a fifth of |dxf| (of ${rows})`).toBeGreaterThanOrEqual(Math.ceil(rows * 0.6));
    console.log(
      `tensor-core loss head (${gpu.describe()}): logits worst error / bound ${worst.toExponential(2)}; ${decided} rows' argmax = target decided; ` +
        `head with backward, N = ${N}: ${(bTc.seconds * 1e3).toFixed(2)} ms on tensor cores vs ${(bRef.seconds * 1e3).toFixed(2)} ms f32`,
    );
    for (const t of [w.data, absW.data, xf]) t.buffer.destroy();
  }, 600_000);
});
