import { ConfigError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { projectionShape, type Projection } from './checkpoint.js';
import type { Qwen3Config } from './config.js';
import { loraScale, type LoraAdapter, type LoraConfig, type LoraPair } from './lora.js';

/**
 * A new adapter initialised as PEFT does (init_lora_weights=True): A (R, K) from
 * kaiming_uniform_(a=√5), i.e. U(−1/√K, 1/√K) since gain = √(2/(1+a²)) = √(1/3) and
 * bound = √3·gain/√K; B (Nout, R) zeros, so the adapted model starts equal to the base.
 * The uniform numbers come from a seeded generator (xoshiro128**), so a seed gives the same adapter
 * on every machine (not the same numbers as torch's generator).
 */
export function createLoraAdapter(gpu: Gpu, model: Qwen3Config, config: LoraConfig, seed: number): LoraAdapter {
  if (!Number.isInteger(config.r) || config.r < 1) throw new ConfigError(`lora_r must be a positive integer, got ${config.r}`);
  if (!(config.alpha > 0)) throw new ConfigError(`lora_alpha must be > 0, got ${config.alpha}`);
  if (config.targetModules.length === 0) throw new ConfigError('lora_target_modules is empty: name at least one of q_proj … down_proj');
  const rng = new Xoshiro128(seed);
  const layers: Partial<Record<Projection, LoraPair>>[] = [];
  for (let l = 0; l < model.numHiddenLayers; l++) {
    const entry: Partial<Record<Projection, LoraPair>> = {};
    for (const p of config.targetModules) {
      const [nOut, k] = projectionShape(model, p);
      const bound = 1 / Math.sqrt(k);
      const a = new Float32Array(config.r * k);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rng.next() - 1) * bound;
      entry[p] = {
        a: gpu.tensorFrom(`lora ${l}.${p}.A`, [config.r, k], 'f32', a),
        b: gpu.tensorFrom(`lora ${l}.${p}.B`, [nOut, config.r], 'f32', new Float32Array(nOut * config.r)),
      };
    }
    layers.push(entry);
  }
  return Object.freeze({ config, scale: loraScale(config), layers });
}

/** xoshiro128** (Blackman & Vigna), seeded through splitmix32; next() is uniform in [0, 1). */
export class Xoshiro128 {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }
  next(): number {
    return this.nextU32() / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
