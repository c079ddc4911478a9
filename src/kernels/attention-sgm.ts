import { ConfigError, DeviceError, ShapeError } from '../errors.js';
import type { AttentionDims, AttentionTensors } from './attention.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { HeadScale } from './head-scale.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import { sgmUnsupportedReason } from './matmul-sgm.js';
import { defineParams } from './params.js';
import { expectPositiveIntegers, expectTensor, tensorView, type Tensor } from './tensor.js';

/**
 * Flash attention on subgroup matrices (tensor cores): the forward of `Attention` (causal GQA with
 * packed-segment masking; shaders/attention_sgm_forward.wgsl has the math and the work split) with
 * QKᵀ and P·V as f16 fragment products accumulated in f32. Its f16 operands are scaled per batch
 * row and KV head group by the power-of-two head scales of src/kernels/head-scale.ts, written by
 * the forward's first three dispatches into one `scales` buffer laid out by `attentionScaleLayout`
 * (q, k, v, and dO for the backward, which computes all four again: a few microseconds, and no
 * per-layer state to keep between the passes).
 */
export const AttentionSgmParams = defineParams('AttentionSgmParams', [
  ['tokens', 'u32'],
  ['qHeads', 'u32'],
  ['kvHeads', 'u32'],
  ['scale', 'f32'],
  ['qOff', 'u32'],
  ['kOff', 'u32'],
  ['vOff', 'u32'],
] as const);

export const attentionSgmForwardSpec: KernelSpec<typeof AttentionSgmParams> = {
  file: 'attention_sgm_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'o', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
    { name: 'scales', access: 'read' },
  ],
  params: AttentionSgmParams,
};

/** Rows per workgroup of every subgroup-matrix attention pass: 4 subgroups of 16 (queries in the forward and dQ, keys in dK/dV). */
export const ATTENTION_SGM_ROWS = 64;
/**
 * Keys per staged tile by default (the shader's BC): 32 ran faster than 64 at every measured shape
 * on the H200 (B4×T512 0.435 against 0.648 ms, four examples a row 0.274 against 0.413, B1×T2048
 * 1.250 against 1.953; bench/results/h200-2026-12-03-attention-sgm-fixed.json).
 */
export const ATTENTION_SGM_DEFAULT_KEYS = 32;
/**
 * The keys per tile the forward takes: its K and V tiles share the Q tile's 64 rows of workgroup
 * memory (two tiles of at most 32 keys), so that both stay staged through a tile without a barrier
 * between tiles (shaders/attention_sgm_forward.wgsl).
 */
export const ATTENTION_SGM_KEYS: readonly number[] = [16, 32];

/**
 * Where each tensor's head scales lie in the `scales` buffer (in floats): one scale per batch row
 * and KV head group (B·Hkv) for each of q, k, v and dO — for q and dO the R = H / Hkv query heads of
 * a group share it (HeadScale over heads = Hkv of width R·Dh), as the backward's sums over a group's
 * heads need one scale — each region starting at a multiple of 64 floats (256 bytes, the storage
 * offset alignment) so that a view of it can be bound as HeadScale's output.
 */
export interface AttentionScaleLayout {
  readonly qOff: number;
  readonly kOff: number;
  readonly vOff: number;
  readonly dOOff: number;
  /** Floats of the whole buffer. */
  readonly length: number;
}

const ALIGN_FLOATS = 64;
const alignUp = (n: number): number => Math.ceil(n / ALIGN_FLOATS) * ALIGN_FLOATS;

export function attentionScaleLayout(B: number, Hkv: number): AttentionScaleLayout {
  const region = alignUp(B * Hkv);
  return { qOff: 0, kOff: region, vOff: 2 * region, dOOff: 3 * region, length: 4 * region };
}

/** The view of region `which` of the scales buffer (HeadScale's output for that tensor). */
export function attentionScaleView(scales: Tensor, layout: AttentionScaleLayout, which: 'q' | 'k' | 'v' | 'dO', count: number): Tensor {
  const off = { q: layout.qOff, k: layout.kOff, v: layout.vOff, dO: layout.dOOff }[which];
  return tensorView(scales.buffer, `${scales.label} (${which})`, [count], 'f32', scales.offset + off * 4);
}

/** The HeadScale dims of `which` (per batch row and KV head group: q and dO group their R heads). */
export function attentionScaleDims(which: 'q' | 'k' | 'v' | 'dO', dims: { B: number; T: number; H: number; Hkv: number; Dh: number }): { B: number; T: number; heads: number; Dh: number } {
  const R = dims.H / dims.Hkv;
  return { B: dims.B, T: dims.T, heads: dims.Hkv, Dh: which === 'q' || which === 'dO' ? R * dims.Dh : dims.Dh };
}

/** The HeadScale dispatches writing the scales of `which` (tensors of t by the same names) into t.scales. */
export function headScales(
  headScale: HeadScale,
  label: string,
  t: { readonly scales: Tensor } & Partial<Record<'q' | 'k' | 'v' | 'dO', Tensor>>,
  which: readonly ('q' | 'k' | 'v' | 'dO')[],
  dims: AttentionDims,
  layout: AttentionScaleLayout,
): Dispatch[] {
  return which.map((w) => {
    const x = t[w];
    if (!x) throw new ShapeError(`${label}: the ${w} tensor is missing`);
    return headScale.forward(`${label} ${w} scale`, { scale: attentionScaleView(t.scales, layout, w, dims.B * dims.Hkv), x }, attentionScaleDims(w, dims));
  });
}

/**
 * Why the subgroup-matrix attention cannot take head dim `dh`, or undefined when it can: a
 * multiple of 32 up to 128 (the forward's output fragments stay in registers, 16 columns each; the
 * backward writes them two at a time). Qwen3's 128 qualifies.
 */
export function attentionSgmHeadDimProblem(dh: number): string | undefined {
  if (!Number.isInteger(dh) || dh < 32 || dh > 128 || dh % 32 !== 0) return `head_dim ${dh} is not a multiple of 32 between 32 and 128`;
  return undefined;
}

/**
 * Why this device cannot run a subgroup-matrix attention pass binding `storageBuffers` storage
 * buffers, or undefined when it can.
 */
export function attentionSgmUnsupportedReason(gpu: Gpu, storageBuffers: number): string | undefined {
  const base = sgmUnsupportedReason(gpu, storageBuffers);
  if (base) return base;
  const info = gpu.device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
  if (info.subgroupMinSize !== undefined && (info.subgroupMinSize > 32 || (info.subgroupMaxSize ?? 32) < 32)) {
    return `the subgroup size is ${info.subgroupMinSize}..${info.subgroupMaxSize}; the subgroup-matrix attention needs subgroups of 32`;
  }
  return undefined;
}

export interface AttentionSgmTensors extends AttentionTensors {
  /** f32 head scales laid out by attentionScaleLayout (q, k and v regions written by HeadScale). */
  readonly scales: Tensor;
}

export class AttentionSgm {
  private constructor(
    readonly headDim: number,
    readonly keysPerTile: number,
    private readonly forwardKernel: Kernel<typeof AttentionSgmParams>,
    /** The head-scale pass (the backward may share it: AttentionSgmBackward.create's headScale). */
    readonly headScale: HeadScale,
  ) {}

  /**
   * Compiles the forward for head dim `headDim` (attentionSgmHeadDimProblem) with `keys` keys
   * per tile (16 or 32; default ATTENTION_SGM_DEFAULT_KEYS), and its head-scale pass unless
   * one is given. A DeviceError where subgroup matrices are missing.
   */
  static async create(gpu: Gpu, options: { headDim: number; keys?: number; headScale?: HeadScale }): Promise<AttentionSgm> {
    const dh = options.headDim;
    const problem = attentionSgmHeadDimProblem(dh);
    if (problem) throw new ConfigError(`AttentionSgm: ${problem}; the f32 attention takes it`);
    const bc = options.keys ?? ATTENTION_SGM_DEFAULT_KEYS;
    if (!ATTENTION_SGM_KEYS.includes(bc)) throw new ConfigError(`AttentionSgm: keys per tile must be ${ATTENTION_SGM_KEYS.join(' or ')}, got ${bc}`);
    const reason = attentionSgmUnsupportedReason(gpu, storageBufferCount(attentionSgmForwardSpec));
    if (reason) throw new DeviceError(`AttentionSgm (attention_sgm_forward.wgsl): ${reason}`);
    const kernel = await Kernel.create(gpu, attentionSgmForwardSpec, { DH: dh, BC: bc });
    return new AttentionSgm(dh, bc, kernel, options.headScale ?? (await HeadScale.create(gpu)));
  }

  /**
   * o (N, H·Dh) and lse (N, H) ← causal GQA attention of q over k, v, as `Attention.forward`: the
   * head scales of q, k and v into t.scales (at attentionScaleLayout(B, Hkv)), then the attention.
   */
  forward(label: string, t: AttentionSgmTensors, dims: AttentionDims): Dispatch[] {
    const { B, T, H, Hkv, Dh } = dims;
    expectPositiveIntegers(label, { B, T, H, Hkv, Dh });
    if (Dh !== this.headDim) throw new ShapeError(`${label}: Dh=${Dh} but the kernel was compiled for head_dim ${this.headDim}`);
    if (H % Hkv !== 0) throw new ShapeError(`${label}: H=${H} query heads is not a multiple of Hkv=${Hkv} key/value heads`);
    const N = B * T;
    expectTensor(label, t.q, [N, H * Dh], 'f32');
    expectTensor(label, t.k, [N, Hkv * Dh], 'f32');
    expectTensor(label, t.v, [N, Hkv * Dh], 'f32');
    expectTensor(label, t.segIds, [N], 'i32');
    expectTensor(label, t.o, [N, H * Dh], 'f32');
    expectTensor(label, t.lse, [N, H], 'f32');
    const layout = attentionScaleLayout(B, Hkv);
    expectTensor(label, t.scales, [layout.length], 'f32');
    const scale = dims.scale ?? 1 / Math.sqrt(Dh);
    const qTiles = Math.ceil(T / ATTENTION_SGM_ROWS);
    return [
      ...headScales(this.headScale, label, t, ['q', 'k', 'v'], dims, layout),
      this.forwardKernel.bind(
        label,
        { o: t.o, lse: t.lse, q: t.q, k: t.k, v: t.v, segIds: t.segIds, scales: t.scales },
        { tokens: T, qHeads: H, kvHeads: Hkv, scale, qOff: layout.qOff, kOff: layout.kOff, vOff: layout.vOff },
        [B * H, qTiles],
      ),
    ];
  }
}
