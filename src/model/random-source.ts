import { CheckpointError } from '../errors.js';
import { f32ToBf16Bits } from './bf16.js';
import { expectedQwen3Shapes } from './checkpoint.js';
import type { Qwen3Config } from './config.js';
import { DEFAULT_CHUNK_BYTES, type TensorChunk } from './safetensors.js';
import type { TensorSource } from './tensor-source.js';

/**
 * Random bf16 weights at the shapes of a Qwen3 config, made up chunk by chunk (nothing is held
 * whole, nothing touches the disk): for benchmarks and real-size runs where weights cannot be
 * downloaded, and for the project's own small model. Norm weights are 1 (as a freshly initialised
 * Qwen3RMSNorm); matrices are uniform in ±std·√3 (standard deviation `std`, default 0.02 =
 * initializer_range; `stdOf(name)`, when given, sets it per tensor). Deterministic: tensor `name`
 * depends only on (seed, name, its std), not on read order.
 */
export class RandomQwen3Source implements TensorSource {
  private readonly shapes: ReadonlyMap<string, readonly number[]>;
  readonly dir: string;

  constructor(
    readonly config: Qwen3Config,
    private readonly seed: number,
    private readonly std = 0.02,
    private readonly stdOf?: (name: string) => number,
  ) {
    this.shapes = expectedQwen3Shapes(config);
    this.dir = `random weights (seed ${seed})`;
  }

  names(): string[] {
    return [...this.shapes.keys()].sort();
  }

  info(name: string): { dtype: 'BF16'; shape: readonly number[] } {
    const shape = this.shapes.get(name);
    if (!shape) throw new CheckpointError(`${this.dir}: no tensor named ${name}`);
    return { dtype: 'BF16', shape };
  }

  async *readChunks(name: string, chunkBytes: number = DEFAULT_CHUNK_BYTES, into?: Uint8Array): AsyncGenerator<TensorChunk> {
    const count = this.info(name).shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith('norm.weight');
    const step = Math.max(2, chunkBytes - (chunkBytes % 4));
    const buf = into && into.byteLength >= step ? into : new Uint8Array(step);
    const words = new Uint16Array(buf.buffer, buf.byteOffset, Math.floor(buf.byteLength / 2));
    let state = hashName(name, this.seed);
    const one = f32ToBf16Bits(1);
    const half = (this.stdOf?.(name) ?? this.std) * Math.sqrt(3);
    // bf16 bit patterns of 4096 evenly spaced values in [−half, half): indexing by random bits is
    // far faster than converting a float per element, and keeps the distribution uniform.
    const table = new Uint16Array(4096);
    for (let i = 0; i < 4096; i++) table[i] = f32ToBf16Bits(((i + 0.5) / 4096) * 2 * half - half);
    for (let start = 0; start < count; start += step / 2) {
      const n = Math.min(step / 2, count - start);
      if (isNorm) words.fill(one, 0, n);
      else {
        for (let i = 0; i < n; i++) {
          // xorshift32
          state ^= state << 13;
          state ^= state >>> 17;
          state ^= state << 5;
          words[i] = table[(state >>> 20) & 4095];
        }
      }
      yield { offset: start * 2, bytes: new Uint8Array(buf.buffer, buf.byteOffset, n * 2) };
    }
  }

  async close(): Promise<void> {}
}

/** FNV-1a of the name mixed with the seed; never 0 (xorshift's fixed point). */
function hashName(name: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h || 0x9e3779b9;
}
