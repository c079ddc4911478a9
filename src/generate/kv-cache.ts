import { ConfigError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { ropeTable } from '../kernels/rope.js';
import type { Tensor } from '../kernels/tensor.js';
import { allocatePlan, planBuffer, type PlanAllocation, type PlanBuffer } from '../model/buffer-plan.js';
import type { Qwen3Config } from '../model/config.js';

/**
 * The GPU state of one generation context, allocated once per Generator and shared by its
 * prefill and decode programs: per layer the keys (after k_norm and rope) and values of every
 * token so far, head-major so that attention reads each head's keys contiguously, and the rope
 * table for positions 0 .. maxContext−1.
 *
 * Memory: L · 2 · Hkv · maxContext · Dh · 4 bytes (Qwen3-4B: 36 · 2 · 8 · 128 · 4 = 294,912 bytes
 * per token of context, 1.13 GiB at 4096).
 */
export interface KvCacheLayer {
  /** (Hkv, maxContext, Dh) f32 — keys after k_norm and rope. */
  readonly k: Tensor;
  /** (Hkv, maxContext, Dh) f32 — values. */
  readonly v: Tensor;
}

/** Names of the cache's plan entries. */
export const KV_CACHE_BUFFERS = {
  k: 'kv cache k (Hkv, maxContext, Dh) f32',
  v: 'kv cache v (Hkv, maxContext, Dh) f32',
  ropeCos: 'generation rope cos (maxContext, Dh/2) f32',
  ropeSin: 'generation rope sin (maxContext, Dh/2) f32',
} as const;

/** The cache's buffers (KvCache.create allocates exactly these): k and v of every layer, the rope table. */
export function planKvCache(c: Qwen3Config, maxContext: number): PlanBuffer[] {
  const { numHiddenLayers: L, numKeyValueHeads: Hkv, headDim: Dh } = c;
  const n = KV_CACHE_BUFFERS;
  return [
    planBuffer(n.k, 'scratch', 'run', [Hkv, maxContext, Dh], 'f32', { count: L }),
    planBuffer(n.v, 'scratch', 'run', [Hkv, maxContext, Dh], 'f32', { count: L }),
    planBuffer(n.ropeCos, 'scratch', 'run', [maxContext, Dh / 2], 'f32'),
    planBuffer(n.ropeSin, 'scratch', 'run', [maxContext, Dh / 2], 'f32'),
  ];
}

export class KvCache {
  private constructor(
    readonly maxContext: number,
    readonly layers: readonly KvCacheLayer[],
    /** (maxContext, Dh/2) f32 each. */
    readonly rope: { readonly cos: Tensor; readonly sin: Tensor },
    readonly bytes: number,
    private readonly allocation: PlanAllocation,
    /** The plan the cache allocated (planKvCache). */
    readonly plan: readonly PlanBuffer[],
  ) {}

  /** Bytes a cache of `maxContext` tokens takes for this model (the rope table not counted). */
  static bytesFor(config: Qwen3Config, maxContext: number): number {
    return config.numHiddenLayers * 2 * config.numKeyValueHeads * maxContext * config.headDim * 4;
  }

  static create(gpu: Gpu, config: Qwen3Config, maxContext: number): KvCache {
    if (!Number.isInteger(maxContext) || maxContext < 2) throw new ConfigError(`KV cache: maxContext must be a whole number ≥ 2, got ${maxContext}`);
    if (maxContext > config.maxPositionEmbeddings) {
      throw new ConfigError(`KV cache: maxContext ${maxContext} exceeds max_position_embeddings ${config.maxPositionEmbeddings} of config.json; use a smaller context`);
    }
    const plan = planKvCache(config, maxContext);
    const a = allocatePlan(gpu, plan);
    const n = KV_CACHE_BUFFERS;
    const ks = a.all(n.k);
    const vs = a.all(n.v);
    const layers = ks.map((k, l) => ({ k, v: vs[l] }));
    const table = ropeTable(config.ropeTheta, config.headDim, maxContext);
    const rope = { cos: a.one(n.ropeCos), sin: a.one(n.ropeSin) };
    gpu.write(rope.cos, table.cos);
    gpu.write(rope.sin, table.sin);
    return new KvCache(maxContext, layers, rope, KvCache.bytesFor(config, maxContext), a, plan);
  }

  destroy(): void {
    this.allocation.destroy();
  }
}
