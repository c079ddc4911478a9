import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { IGNORE_INDEX } from '../../src/labels.js';
import { CrossEntropy } from '../../src/kernels/cross-entropy.js';
import type { Dispatch } from '../../src/kernels/dispatch.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { Matmul, type LinearWeight } from '../../src/kernels/matmul.js';
import { MatmulBackward } from '../../src/kernels/matmul-backward.js';
import type { MatmulSgm, MatmulSgmCall } from '../../src/kernels/matmul-sgm.js';
import type { MatmulSgmInput, SgmInputCallOptions, SgmInputGradTensors } from '../../src/kernels/matmul-sgm-input.js';
import { SumReduce } from '../../src/kernels/reduce.js';
import { RowScale, rowScaleRef } from '../../src/kernels/row-scale.js';
import { numel, type Tensor } from '../../src/kernels/tensor.js';
import { allocatePlan } from '../../src/model/buffer-plan.js';
import { ATTENTION_SCALES_BUFFER, ROW_SCALE_BUFFER } from '../../src/model/compute-path.js';
import { parseQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { embeddedConfig } from '../../src/model/embedded.js';
import { planForward } from '../../src/model/forward-plan.js';
import {
  chooseLossHead,
  chooseLossHeadFor,
  HEAD_BUFFERS,
  LossHead,
  lossHeadPath,
  lossHeadPlan,
  lossHeadTensorCoreUnsupported,
  type LossHeadChoice,
  type LossHeadKernels,
} from '../../src/model/loss-head.js';
import { tensorCoresHaveHead, type TensorCoreKernels } from '../../src/model/tensor-core-kernels.js';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { planMicroBatch } from '../../src/train/step-plan.js';
import { NAN_WORD, expectRelNorm } from '../helpers/compare.js';
import { TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { makeTestWeight } from '../helpers/weights.js';

/**
 * The chunked loss head's lm_head on the tensor-core path (src/model/loss-head.ts): which head and
 * which matmuls a program gets, what the plans add (the row scales of xf and of a chunk's dlogits,
 * nothing on the f32 path), and on lavapipe — which has no subgroup matrices — the head built on the
 * tensor-core path with f32 stand-ins for MatmulSgm / MatmulSgmInput and the real RowScale kernel:
 * the stand-ins check the row-scale tensors they are given, then run the f32 kernels, so the loss
 * equals the f32 head's exactly and dxf agrees to f32 rounding (the stand-in sums dX in one pass,
 * the f32 head in split slices); the planned row-scale buffers hold the scales of xf and of the
 * last chunk's dlogits. The subgroup-matrix head itself is tested on the GPU host (tests/gpu/loss-head-sgm.test.ts).
 */
const qwen4b = parseQwen3Config(JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/models/qwen3-4b.json'), 'utf8')), 'qwen3-4b.json');
const qwen8b = parseQwen3Config(JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/models/qwen3-8b.json'), 'utf8')), 'qwen3-8b.json');
const fixture = parseQwen3Config(JSON.parse(readFileSync(join(TINY_MODEL, 'config.json'), 'utf8')), 'config.json');

/** Kernels that are never called (the choice reads only which exist). */
const placeholder = {} as never;
const bf16Head = (c: Pick<Qwen3Config, 'vocabSize' | 'hiddenSize'>): LinearWeight => ({ format: 'bf16', nOut: c.vocabSize, k: c.hiddenSize, data: placeholder });
const fakeGpu = { limits: { maxStorageBufferBindingSize: 2 ** 31 - 4 } } as unknown as Gpu;
const cores = (over: Partial<TensorCoreKernels> = {}): TensorCoreKernels => ({ matmul: placeholder, rowScale: placeholder, input: placeholder, ...over });
const kernels = (over: Partial<LossHeadKernels> = {}): LossHeadKernels => ({ matmul: placeholder, crossEntropy: placeholder, sum: placeholder, matmulBackward: placeholder, ...over });

describe('loss head on the tensor-core path: choice and plan', () => {
  it('lossHeadPath: tensor cores for the chunked head where the projections take them and the lm_head fits; f32 otherwise', () => {
    for (const c of [qwen4b, qwen8b, embeddedConfig()]) expect(lossHeadPath('tensor-cores', 'chunked', c.vocabSize, c.hiddenSize), c.hiddenSize.toString()).toBe('tensor-cores');
    expect(lossHeadPath('f32', 'chunked', qwen4b.vocabSize, qwen4b.hiddenSize)).toBe('f32');
    expect(lossHeadPath(undefined, 'chunked', qwen4b.vocabSize, qwen4b.hiddenSize)).toBe('f32');
    expect(lossHeadPath('tensor-cores', 'fused', qwen4b.vocabSize, qwen4b.hiddenSize)).toBe('f32');
    // the fixture's hidden size 32 is not a multiple of the NF4 block; a vocabulary of 1001 is not one of vec4 rows
    expect(lossHeadPath('tensor-cores', 'chunked', fixture.vocabSize, fixture.hiddenSize)).toBe('f32');
    expect(lossHeadTensorCoreUnsupported(fixture.vocabSize, 32)).toMatch(/\(151936, 32\).*multiple of 64/);
    expect(lossHeadTensorCoreUnsupported(1001, 64)).toMatch(/V a multiple of 4/);
    expect(lossHeadTensorCoreUnsupported(1000, 64)).toBeUndefined();
  });

  it('chooseLossHead: auto takes the chunked head on tensor cores even where the fused kernels exist; fused asked for stays fused', () => {
    const head = bf16Head(embeddedConfig()); // D = 64: the fused head fits
    const fused = placeholder;
    expect(chooseLossHead(kernels({ crossEntropyFused: fused }), head)).toBe('fused');
    expect(chooseLossHead(kernels({ crossEntropyFused: fused, tensorCores: cores() }), head)).toBe('chunked');
    expect(chooseLossHead(kernels({ crossEntropyFused: fused, tensorCores: cores() }), head, 'fused')).toBe('fused');
    // an lm_head the subgroup-matrix kernels cannot take: the rule without tensor cores
    expect(chooseLossHead(kernels({ crossEntropyFused: fused, tensorCores: cores() }), bf16Head({ vocabSize: 1000, hiddenSize: 32 }))).toBe('fused');
    expect(chooseLossHead(kernels({ tensorCores: cores() }), bf16Head(qwen4b))).toBe('chunked');
    expect(chooseLossHead(kernels(), bf16Head(qwen4b))).toBe('chunked');
  });

  it('chooseLossHeadFor: the lm_head path, and a ConfigError where the tensor-core kernels lack its format or the input gradient', () => {
    const head = bf16Head(qwen4b);
    const shape = { N: 1024, backward: true } as const;
    expect(chooseLossHeadFor(fakeGpu, kernels(), head, shape)).toEqual({ mode: 'chunked', chunkTokens: 1024, matmul: 'f32' });
    expect(chooseLossHeadFor(fakeGpu, kernels({ tensorCores: cores() }), head, shape).matmul).toBe('tensor-cores');
    expect(chooseLossHeadFor(fakeGpu, kernels({ tensorCores: cores({ formats: ['nf4'], headFormats: ['bf16'] }) }), head, shape).matmul).toBe('tensor-cores');
    expect(chooseLossHeadFor(fakeGpu, kernels({ tensorCores: cores({ formats: ['bf16', 'f32'] }) }), head, shape).matmul).toBe('tensor-cores');
    expect(() => chooseLossHeadFor(fakeGpu, kernels({ tensorCores: cores({ formats: ['nf4'] }) }), head, shape)).toThrow(ConfigError);
    expect(() => chooseLossHeadFor(fakeGpu, kernels({ tensorCores: cores({ formats: ['nf4'] }) }), head, shape)).toThrow(/lack the lm_head's bf16 variants.*headFormats/);
    const noInput = kernels({ tensorCores: cores({ input: undefined }) });
    expect(() => chooseLossHeadFor(fakeGpu, noInput, head, shape)).toThrow(/or the input gradient/);
    // the evaluation forward needs no input gradient
    expect(chooseLossHeadFor(fakeGpu, noInput, head, { N: 1024, backward: false }).matmul).toBe('tensor-cores');
    expect(tensorCoresHaveHead(cores({ formats: ['nf4dq'], headFormats: ['bf16'] }), 'bf16', true)).toBe(true);
    expect(tensorCoresHaveHead(cores({ formats: ['nf4dq'], headFormats: ['bf16'] }), 'f32', false)).toBe(false);
  });

  it('lossHeadPlan: the tensor-core head adds the row scales of xf (N) and, training, of a chunk of dlogits (Tc); the f32 head is as before', () => {
    const [N, V, D, Tc] = [4096, qwen4b.vocabSize, qwen4b.hiddenSize, 1024];
    const f32: LossHeadChoice = { mode: 'chunked', chunkTokens: Tc, matmul: 'f32' };
    const tc: LossHeadChoice = { ...f32, matmul: 'tensor-cores' };
    const H = HEAD_BUFFERS;
    const f32Names = [H.targets, H.tokenLoss, H.tokenLse, H.correct, H.lossSum, H.correctSum, H.logits];
    for (const backward of [false, true]) {
      expect(lossHeadPlan(N, V, D, f32, backward).map((b) => b.name)).toEqual(f32Names);
      const plan = lossHeadPlan(N, V, D, tc, backward);
      expect(plan.map((b) => b.name)).toEqual([...f32Names, H.xRowScale, ...(backward ? [H.gradRowScale] : [])]);
      expect(plan.find((b) => b.name === H.xRowScale)?.bytes).toBe(4 * N);
      if (backward) expect(plan.find((b) => b.name === H.gradRowScale)?.bytes).toBe(4 * Tc);
      expect(plan.filter((b) => f32Names.includes(b.name as never))).toEqual(lossHeadPlan(N, V, D, f32, backward));
    }
  });

  it('the step and forward plans count the head row scales on the tensor-core path only (none for the fixture model, whose lm_head does not fit)', () => {
    const base = { batch: 2, seq: 512, r: 16, targets: PROJECTIONS, recompute: 'full' as const, loraDropout: 0, lossHead: 'chunked' as const, lossChunkTokens: 1024 };
    const headScales = (names: string[]) => names.filter((n) => n === HEAD_BUFFERS.xRowScale || n === HEAD_BUFFERS.gradRowScale);
    for (const c of [qwen4b, qwen8b]) {
      const f32 = planMicroBatch(c, { ...base, compute: 'f32' }).map((b) => b.name);
      const tc = planMicroBatch(c, { ...base, compute: 'tensor-cores' }).map((b) => b.name);
      expect(headScales(f32)).toEqual([]);
      expect(headScales(tc)).toEqual([HEAD_BUFFERS.xRowScale, HEAD_BUFFERS.gradRowScale]);
      // the tensor-core plan is the f32 plan plus the projections' row scales, the head's and the
      // attention's head scales, its stats (two floats a row) in place of the f32 attention's delta
      const sameAsF32 = (n: string): string => (n === 'attention stats (N, H, 2)' ? 'attention delta (N, H)' : n);
      expect(tc.filter((n) => n !== ROW_SCALE_BUFFER && n !== ATTENTION_SCALES_BUFFER && !headScales([n]).length).map(sameAsF32)).toEqual(f32);
      const fwd = (compute: 'f32' | 'tensor-cores') => planForward(c, { batch: 2, seq: 512, targets: [], lossChunkTokens: 1024, compute }).buffers.map((b) => b.name);
      expect(headScales(fwd('tensor-cores'))).toEqual([HEAD_BUFFERS.xRowScale]);
      expect(headScales(fwd('f32'))).toEqual([]);
    }
    expect(headScales(planMicroBatch(fixture, { ...base, compute: 'tensor-cores' }).map((b) => b.name))).toEqual([]);
    expect(headScales(planMicroBatch(qwen4b, { ...base, compute: 'tensor-cores', lossHead: 'fused' }).map((b) => b.name))).toEqual([]);
  });
});

/**
 * Stand-ins for the subgroup-matrix kernels: each checks the row-scale tensor it is given (one f32
 * per row of its matrix input, its own buffer), records it, and runs the f32 kernel.
 */
function standIns(k: { matmul: Matmul; matmulBackward: MatmulBackward }, rowScale: RowScale, seen: { forward: Tensor[]; input: Tensor[]; rowScale: number }): TensorCoreKernels {
  const rowsOf = (t: Tensor): number => numel(t.shape) / t.shape[t.shape.length - 1];
  const expectScales = (label: string, scales: Tensor, x: Tensor): void => {
    if (scales.dtype !== 'f32' || numel(scales.shape) !== rowsOf(x) || scales.buffer === x.buffer) throw new Error(`${label}: row scales [${scales.shape.join(', ')}] for ${rowsOf(x)} rows`);
  };
  const matmul = {
    forward: (label: string, call: MatmulSgmCall): Dispatch => {
      expectScales(label, call.rowScale, call.x);
      seen.forward.push(call.rowScale);
      return k.matmul.forward(label, { y: call.y, x: call.x, w: call.w, accumulate: call.accumulate, lora: call.lora });
    },
  } as unknown as MatmulSgm;
  const input = {
    input: (label: string, t: SgmInputGradTensors, o: SgmInputCallOptions = {}): Dispatch[] => {
      expectScales(label, t.rowScale, t.dy);
      seen.input.push(t.rowScale);
      return [k.matmulBackward.input(label, { dx: t.dx, dy: t.dy, w: t.w }, { accumulate: o.accumulate, scale: o.scale })];
    },
  } as unknown as MatmulSgmInput;
  const counted = {
    forward: (...args: Parameters<RowScale['forward']>): Dispatch => {
      seen.rowScale++;
      return rowScale.forward(...args);
    },
  } as unknown as RowScale;
  return { matmul, rowScale: counted, input, formats: ['nf4'], headFormats: ['bf16'] };
}

describe('loss head on the tensor-core path: plumbing on lavapipe (f32 stand-ins)', () => {
  it('two chunks (64 + 37 rows), rows of 1e-3 to 1e3: loss equal to the f32 head, dxf within f32 rounding, the planned row scales written', async () => {
    const gpu = await testGpu();
    // V a multiple of 4 but of no tile, D the smallest multiple of 64; N leaves a partial second chunk
    const [N, V, D, chunk] = [101, 1996, 64, 64];
    const rng = new Rng(41);
    const { w } = makeTestWeight(gpu, rng, 'bf16', V, D);
    const mags = [1e-3, 0.1, 1, 30, 1e3];
    const xv = Float32Array.from({ length: N * D }, (_, i) => rng.normal() * mags[Math.floor(i / D) % mags.length]);
    const targets = Int32Array.from({ length: N }, (_, i) => (i % 9 === 4 ? IGNORE_INDEX : rng.int(0, V)));
    const base = { matmul: await Matmul.create(gpu), crossEntropy: await CrossEntropy.create(gpu), sum: await SumReduce.create(gpu), matmulBackward: await MatmulBackward.create(gpu) };
    const seen = { forward: [] as Tensor[], input: [] as Tensor[], rowScale: 0 };
    const withCores: LossHeadKernels = { ...base, tensorCores: standIns(base, await RowScale.create(gpu), seen) };

    const run = async (k: LossHeadKernels) => {
      const choice = chooseLossHeadFor(gpu, k, w, { N, backward: true, mode: 'chunked', lossChunkTokens: chunk });
      const bufs = allocatePlan(gpu, lossHeadPlan(N, V, D, choice, true));
      const xf = gpu.tensorFrom('xf', [N, D], 'f32', xv);
      const dxf = gpu.tensor('dxf', [N, D], 'f32');
      gpu.write(dxf, new Uint32Array(N * D).fill(NAN_WORD));
      const head = LossHead.build(gpu, k, w, xf, dxf, { N, backward: true }, choice, bufs);
      const count = head.setTargets(targets, 'test');
      submitDispatches(gpu, head.dispatches);
      const out = {
        head,
        count,
        sums: await head.readSums(),
        tokenLoss: await gpu.readF32(head.tokenLoss),
        dxf: await gpu.readF32(dxf),
        scales: choice.matmul === 'tensor-cores' ? { x: await gpu.readF32(bufs.one(HEAD_BUFFERS.xRowScale)), grad: await gpu.readF32(bufs.one(HEAD_BUFFERS.gradRowScale)), dlogits: await gpu.readF32(bufs.one(HEAD_BUFFERS.logits)) } : undefined,
      };
      xf.buffer.destroy();
      dxf.buffer.destroy();
      bufs.destroy();
      return out;
    };
    const f32 = await run(base);
    const tc = await run(withCores);
    expect(f32.head.matmul).toBe('f32');
    expect(tc.head.matmul).toBe('tensor-cores');
    expect(tc.head.mode).toBe('chunked');
    expect(tc.count).toBe(targets.filter((t) => t !== IGNORE_INDEX).length);
    // two chunks: a logits matmul and a dX each; row scales: xf once, each chunk's dlogits
    expect(seen.forward.map((t) => t.shape[0])).toEqual([64, 37]);
    expect(seen.input.map((t) => t.shape[0])).toEqual([64, 37]);
    expect(seen.rowScale).toBe(3);
    // the lm_head's dispatches keep 'lm_head' in their labels (bench/profile-step.ts attributes time by label)
    const labels = tc.head.dispatches.map((d) => d.label);
    expect(labels.filter((l) => /row ?scale/i.test(l)).every((l) => l.includes('lm_head'))).toBe(true);
    expect(labels.filter((l) => l.includes('lm_head')).length).toBeGreaterThanOrEqual(2 + 2 + 3);

    expect(tc.sums.loss).toBe(f32.sums.loss);
    expect(tc.sums.correct).toBe(f32.sums.correct);
    expect(Array.from(tc.tokenLoss)).toEqual(Array.from(f32.tokenLoss));
    expect(tc.dxf.every(Number.isFinite)).toBe(true);
    expectRelNorm('dxf, tensor-core plumbing vs f32 head', tc.dxf, f32.dxf, 1e-5);
    for (let i = 0; i < N; i++) if (targets[i] === IGNORE_INDEX) expect(tc.dxf.subarray(i * D, (i + 1) * D).every((v) => v === 0), `row ${i}`).toBe(true);

    // the planned buffers hold what the row-scale rule gives: xf's N rows; the last chunk's 37 rows of dlogits
    expect(Array.from(tc.scales!.x)).toEqual(Array.from(rowScaleRef(xv, N, D)));
    const last = N - chunk;
    expect(Array.from(tc.scales!.grad.subarray(0, last))).toEqual(Array.from(rowScaleRef(tc.scales!.dlogits.subarray(0, last * V), last, V)));
  }, 120_000);
});
