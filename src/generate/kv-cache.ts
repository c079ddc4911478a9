import { ConfigError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { ropeTable, uploadRopeTable } from '../kernels/rope.js';
import type { Tensor } from '../kernels/tensor.js';
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

export class KvCache {
  private constructor(
    readonly maxContext: number,
    readonly layers: readonly KvCacheLayer[],
    /** (maxContext, Dh/2) f32 each. */
    readonly rope: { readonly cos: Tensor; readonly sin: Tensor },
    readonly bytes: number,
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
    const { numKeyValueHeads: Hkv, headDim: Dh } = config;
    const layers = Array.from({ length: config.numHiddenLayers }, (_, l) => ({
      k: gpu.tensor(`kv cache ${l} k (Hkv, maxContext, Dh) f32`, [Hkv, maxContext, Dh], 'f32'),
      v: gpu.tensor(`kv cache ${l} v (Hkv, maxContext, Dh) f32`, [Hkv, maxContext, Dh], 'f32'),
    }));
    const rope = uploadRopeTable(gpu, ropeTable(config.ropeTheta, Dh, maxContext), 'generation rope');
    return new KvCache(maxContext, layers, rope, KvCache.bytesFor(config, maxContext));
  }

  destroy(): void {
    for (const l of this.layers) {
      l.k.buffer.destroy();
      l.v.buffer.destroy();
    }
    this.rope.cos.buffer.destroy();
    this.rope.sin.buffer.destroy();
  }
}
