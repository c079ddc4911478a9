import { ConfigError, DeviceError } from '../errors.js';
import type { AttentionDims } from './attention.js';
import { checkAttentionBackwardTensors, type AttentionBackwardTensors } from './attention-backward.js';
import { ATTENTION_SGM_ROWS, attentionScaleLayout, attentionSgmHeadDimProblem, attentionSgmUnsupportedReason, headScales } from './attention-sgm.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { foldGrid } from './grid.js';
import { HeadScale } from './head-scale.js';
import { Kernel, storageBufferCount, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectDisjoint, expectNoReadWriteAlias, expectTensor, type Tensor } from './tensor.js';

/**
 * Backward of `AttentionSgm.forward` on subgroup matrices (FlashAttention-2 form), the same
 * result as `AttentionBackward` with f16 fragment products accumulated in f32:
 *   0. head scales of q, k, v and dO into `scales` (src/kernels/head-scale.ts, four dispatches)
 *   1. stats = (lse·log2 e, rowsum(dO ⊙ O))            shaders/attention_sgm_backward_stats.wgsl
 *   2. dQ: one workgroup per 64 queries of one head      shaders/attention_sgm_backward_dq.wgsl
 *   3. dK, dV: one workgroup per 64 keys of one KV head, looping over the heads of its group and
 *      the query tiles at or after it (no atomics)      shaders/attention_sgm_backward_dkdv.wgsl
 * The f16 scaling (head scales, and dS scaled by 2^-(15 + ceil(log2 Dh)) so that it cannot pass
 * 2^14) is explained in the dQ shader's header.
 */
export const AttentionSgmBackwardParams = defineParams('AttentionSgmBackwardParams', [
  ['tokens', 'u32'],
  ['qHeads', 'u32'],
  ['kvHeads', 'u32'],
  ['scale', 'f32'],
  ['qOff', 'u32'],
  ['kOff', 'u32'],
  ['vOff', 'u32'],
  ['dOOff', 'u32'],
  ['dsScale', 'f32'],
] as const);

export const AttentionStatsParams = defineParams('AttentionStatsParams', [['rows', 'u32']] as const);

export const attentionSgmStatsSpec: KernelSpec<typeof AttentionStatsParams> = {
  file: 'attention_sgm_backward_stats.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'stats', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'o', access: 'read' },
    { name: 'lse', access: 'read' },
  ],
  params: AttentionStatsParams,
};

export const attentionSgmDqSpec: KernelSpec<typeof AttentionSgmBackwardParams> = {
  file: 'attention_sgm_backward_dq.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dq', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
    { name: 'stats', access: 'read' },
    { name: 'scales', access: 'read' },
  ],
  params: AttentionSgmBackwardParams,
};

export const attentionSgmDkdvSpec: KernelSpec<typeof AttentionSgmBackwardParams> = {
  file: 'attention_sgm_backward_dkdv.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dk', access: 'read_write' },
    { name: 'dv', access: 'read_write' },
    { name: 'dO', access: 'read' },
    { name: 'q', access: 'read' },
    { name: 'k', access: 'read' },
    { name: 'v', access: 'read' },
    { name: 'segIds', access: 'read' },
    { name: 'stats', access: 'read' },
    { name: 'scales', access: 'read' },
  ],
  params: AttentionSgmBackwardParams,
};

/** The most storage buffers one backward pass binds (the dK/dV pass's). */
export const ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS = Math.max(...[attentionSgmStatsSpec, attentionSgmDqSpec, attentionSgmDkdvSpec].map(storageBufferCount));
const STATS_WORKGROUP = 256;

/** The scale of dS before its f16 rounding: 2^-(15 + ceil(log2 Dh)) (the dQ shader's header says why). */
export function attentionDsScale(headDim: number): number {
  return 2 ** -(15 + Math.ceil(Math.log2(headDim)));
}

export interface AttentionSgmBackwardTensors extends Omit<AttentionBackwardTensors, 'delta'> {
  /** (N, H, 2) f32 scratch: (lse·log2 e, delta) of each query, written by the stats pass. */
  readonly stats: Tensor;
  /** f32 scratch of attentionScaleLayout(B, Hkv).length floats: the head scales, written by the first dispatches. */
  readonly scales: Tensor;
}

export class AttentionSgmBackward {
  private constructor(
    readonly headDim: number,
    private readonly statsKernel: Kernel<typeof AttentionStatsParams>,
    private readonly dqKernel: Kernel<typeof AttentionSgmBackwardParams>,
    private readonly dkdvKernel: Kernel<typeof AttentionSgmBackwardParams>,
    private readonly headScale: HeadScale,
    private readonly statsRowThreads: number,
  ) {}

  /**
   * Compiles the passes for head dim `headDim` (attentionSgmHeadDimProblem), with `keys` keys per
   * dQ tile and `queries` queries per dK/dV tile (16 or 32, default 32), and the head-scale pass
   * unless one is given (the forward's: AttentionSgm.headScale). A DeviceError where subgroup
   * matrices are missing.
   */
  static async create(gpu: Gpu, options: { headDim: number; keys?: number; queries?: number; headScale?: HeadScale }): Promise<AttentionSgmBackward> {
    const dh = options.headDim;
    const problem = attentionSgmHeadDimProblem(dh);
    if (problem) throw new ConfigError(`AttentionSgmBackward: ${problem}; the f32 attention takes it`);
    const bc = options.keys ?? 32;
    const bq = options.queries ?? 32;
    if (![16, 32].includes(bc) || ![16, 32].includes(bq)) throw new ConfigError(`AttentionSgmBackward: keys and queries per tile must be 16 or 32, got ${bc} and ${bq}`);
    const reason = attentionSgmUnsupportedReason(gpu, ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS);
    if (reason) throw new DeviceError(`AttentionSgmBackward: ${reason}`);
    const rt = [8, 4, 2, 1].find((n) => n <= dh / 4) ?? 1;
    const statsKernel = await Kernel.create(gpu, attentionSgmStatsSpec, { DH: dh, RT: rt, WG: STATS_WORKGROUP });
    const dqKernel = await Kernel.create(gpu, attentionSgmDqSpec, { DH: dh, BC: bc });
    const dkdvKernel = await Kernel.create(gpu, attentionSgmDkdvSpec, { DH: dh, BQ: bq });
    return new AttentionSgmBackward(dh, statsKernel, dqKernel, dkdvKernel, options.headScale ?? (await HeadScale.create(gpu)), rt);
  }

  /**
   * dq (N, H·Dh), dk, dv (N, Hkv·Dh) — overwritten — from dO and the forward's q, k, v, o, lse,
   * segIds; stats and scales are scratch. Returns the dispatches in order; submit them together.
   */
  backward(label: string, t: AttentionSgmBackwardTensors, dims: AttentionDims): Dispatch[] {
    const { B, T, H, Hkv, Dh } = dims;
    const where = `${label} (attentionSgmBackward)`;
    const N = checkAttentionBackwardTensors(label, where, t, dims, this.headDim);
    expectTensor(where, t.stats, [N, H, 2], 'f32');
    const layout = attentionScaleLayout(B, Hkv);
    expectTensor(where, t.scales, [layout.length], 'f32');
    expectNoReadWriteAlias(where, [t.dq, t.dk, t.dv, t.stats, t.scales], [t.dO, t.q, t.k, t.v, t.o, t.lse, t.segIds]);
    expectDisjoint(where, t.dk, t.dv);
    const scale = dims.scale ?? 1 / Math.sqrt(Dh);
    const params = { tokens: T, qHeads: H, kvHeads: Hkv, scale, qOff: layout.qOff, kOff: layout.kOff, vOff: layout.vOff, dOOff: layout.dOOff, dsScale: attentionDsScale(Dh) };
    const rowsPerGroup = STATS_WORKGROUP / this.statsRowThreads;
    const tiles = Math.ceil(T / ATTENTION_SGM_ROWS); // queries per dQ workgroup, keys per dK/dV workgroup
    return [
      ...headScales(this.headScale, label, t, ['q', 'k', 'v', 'dO'], dims, layout),
      this.statsKernel.bind(`${label} stats`, { stats: t.stats, dO: t.dO, o: t.o, lse: t.lse }, { rows: N * H }, foldGrid(Math.ceil((N * H) / rowsPerGroup))),
      this.dqKernel.bind(`${label} dq`, { dq: t.dq, dO: t.dO, q: t.q, k: t.k, v: t.v, segIds: t.segIds, stats: t.stats, scales: t.scales }, params, [B * H, tiles]),
      this.dkdvKernel.bind(
        `${label} dk/dv`,
        { dk: t.dk, dv: t.dv, dO: t.dO, q: t.q, k: t.k, v: t.v, segIds: t.segIds, stats: t.stats, scales: t.scales },
        params,
        [B * Hkv, tiles],
      ),
    ];
  }
}
