import { basename } from 'node:path';
import { ExportError, ShapeError } from '../errors.js';
import { NF4_BLOCK, NF4_CODEBOOK, nf4DoubleDequantizeRef, nf4DoubleQuantizeRef, nf4QuantizeRef } from '../kernels/nf4.js';
import { Checkpoint, PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { bytesToF32, DTYPE_BYTES, type SafetensorsDtype } from '../model/safetensors.js';
import { applyLoraDelta, type LoraDelta } from './lora-delta.js';
import type { HostLoraAdapter } from '../model/peft.js';

/**
 * The weights an export writes, streamed tensor by tensor in row chunks of f32: the checkpoint's own
 * values, optionally with a LoRA adapter merged in,
 *
 *   W' = W + scale · B·A        W (Nout, K), B (Nout, R), A (R, K), scale = alpha/r (alpha/√r rsLoRA)
 *
 * where W is the checkpoint's weight (`base: 'original'`, the default and the seed's behaviour) or
 * the NF4 round trip of it the adapter was trained against (`base: 'nf4'`: blocks of 64,
 * value = codebook[code]·absmax as the GPU dequantises, with double-quantised absmax when
 * `doubleQuant`). The sum is formed in float64 from the f32 (bf16-exact) W and rounded once to f32;
 * writers round that f32 to their own type (bf16 for the merged folder: round to nearest even,
 * which is what torch's `.to(torch.bfloat16)` does after PEFT's f32 merge).
 *
 * Peak host memory: one chunk of `maxElements` values (plus its source bytes), whatever the model
 * size; the NF4 double-quantisation pre-pass keeps one f32 absmax per 64 weights of one tensor.
 */

export type MergeBase = 'original' | 'nf4';

export interface MergeOptions {
  readonly base?: MergeBase;
  /** NF4 with bitsandbytes' double-quantised absmax (bnb_4bit_use_double_quant), as trained. */
  readonly doubleQuant?: boolean;
}

/** Rows [row0, row0 + rows) of a tensor, (rows, K) f32 row-major; a 1-D tensor is one row. */
export interface WeightChunk {
  readonly row0: number;
  readonly rows: number;
  /** Freshly allocated for each chunk (the consumer may keep or transfer it). */
  readonly values: Float32Array;
  /** Present only with deferDelta: the LoRA term still to add. */
  readonly delta?: LoraDelta;
}

export interface WeightInfo {
  readonly shape: readonly number[];
  readonly dtype: SafetensorsDtype;
  /** Shard file (base name) holding the tensor in the source checkpoint. */
  readonly file: string;
}

/** Default chunk: 4 Mi values (16 MiB of f32). */
export const DEFAULT_CHUNK_ELEMENTS = 1 << 22;

const PROJECTION_NAME = /^model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.weight$/;

/** Layer and projection of a checkpoint tensor name, or undefined for other tensors. */
export function parseProjectionName(name: string): { layer: number; projection: Projection } | undefined {
  const m = PROJECTION_NAME.exec(name);
  if (!m || !(PROJECTIONS as readonly string[]).includes(m[2])) return undefined;
  return { layer: Number(m[1]), projection: m[2] as Projection };
}

/** What the writers read: a model's config and its tensors as f32 row chunks (MergedWeights). */
export interface WeightStream {
  readonly config: Qwen3Config;
  /** The source folder (for files copied along, e.g. generation_config.json). */
  readonly dir: string;
  names(): string[];
  info(name: string): WeightInfo;
  chunks(name: string, maxElements?: number, options?: { deferDelta?: boolean }): AsyncGenerator<WeightChunk>;
}

export class MergedWeights implements WeightStream {
  private constructor(
    private readonly ckpt: Checkpoint,
    private readonly adapter: HostLoraAdapter | undefined,
    readonly base: MergeBase,
    readonly doubleQuant: boolean,
  ) {}

  /** Opens the checkpoint folder; `adapter` (read for this model) is merged when given. */
  static async open(modelDir: string, adapter?: HostLoraAdapter, options: MergeOptions = {}): Promise<MergedWeights> {
    const ckpt = await Checkpoint.open(modelDir);
    const w = new MergedWeights(ckpt, adapter, options.base ?? 'original', options.doubleQuant ?? false);
    if (adapter) {
      try {
        w.checkAdapter(adapter);
      } catch (e) {
        await ckpt.close();
        throw e;
      }
    }
    return w;
  }

  get config(): Qwen3Config {
    return this.ckpt.config;
  }

  get dir(): string {
    return this.ckpt.dir;
  }

  /** True when an adapter is merged in. */
  get merged(): boolean {
    return this.adapter !== undefined;
  }

  /** The checkpoint's tensor names (sorted). */
  names(): string[] {
    return this.ckpt.names();
  }

  info(name: string): WeightInfo {
    const i = this.ckpt.info(name);
    return { shape: i.shape, dtype: i.dtype, file: basename(i.path) };
  }

  /**
   * Streams tensor `name` as f32 row chunks of at most `maxElements` values (at least one row;
   * with an NF4 base, a whole number of 64-value blocks). With `deferDelta` the LoRA term is
   * returned with the chunk instead of added (see LoraDelta).
   */
  async *chunks(name: string, maxElements = DEFAULT_CHUNK_ELEMENTS, options: { deferDelta?: boolean } = {}): AsyncGenerator<WeightChunk> {
    const info = this.ckpt.info(name);
    const k = info.shape[info.shape.length - 1] ?? 1;
    const proj = parseProjectionName(name);
    const nf4 = proj !== undefined && this.base === 'nf4';
    let rowsPer = Math.max(1, Math.floor(maxElements / k));
    if (nf4) {
      const step = NF4_BLOCK / gcd(k, NF4_BLOCK);
      rowsPer = Math.max(step, rowsPer - (rowsPer % step));
    }
    const pair = proj && this.adapter ? this.adapter.layers[proj.layer]?.[proj.projection] : undefined;
    const dqAbsmax = nf4 && this.doubleQuant ? await this.doubleQuantizedAbsmax(name, rowsPer * k) : undefined;
    const item = DTYPE_BYTES[info.dtype];
    for await (const { offset, bytes } of this.ckpt.readChunks(name, rowsPer * k * item)) {
      const values = bytesToF32(bytes, info.dtype, `${this.ckpt.dir}: ${name}`);
      const row0 = offset / (k * item);
      const rows = values.length / k;
      if (nf4) nf4RoundTrip(values, row0 * k, dqAbsmax);
      if (!pair) {
        yield { row0, rows, values };
        continue;
      }
      const { r } = this.adapter!.config;
      const delta = { a: pair.a, b: pair.b.slice(row0 * r, (row0 + rows) * r), r, scale: this.adapter!.scale };
      if (options.deferDelta) {
        yield { row0, rows, values, delta };
      } else {
        applyLoraDelta(values, delta);
        yield { row0, rows, values };
      }
    }
  }

  /** A whole tensor as f32 (small tensors and tests). */
  async read(name: string): Promise<Float32Array> {
    const info = this.ckpt.info(name);
    const out = new Float32Array(info.shape.reduce((a, d) => a * d, 1));
    const k = info.shape[info.shape.length - 1] ?? 1;
    for await (const c of this.chunks(name)) out.set(c.values, c.row0 * k);
    return out;
  }

  async close(): Promise<void> {
    await this.ckpt.close();
  }

  /** The adapter's layer count, targets and factor shapes must fit this checkpoint. */
  private checkAdapter(adapter: HostLoraAdapter): void {
    const c = this.config;
    if (adapter.layers.length !== c.numHiddenLayers) {
      throw new ShapeError(`the adapter has ${adapter.layers.length} layers but ${this.ckpt.dir} has ${c.numHiddenLayers}; it was made for another model`);
    }
    for (const p of adapter.config.targetModules) {
      const [nOut, k] = projectionShape(c, p);
      const [aOut, aK] = adapter.shapes[p];
      if (aOut !== nOut || aK !== k) {
        throw new ShapeError(`the adapter's ${p} is ${aOut}×${aK} but ${this.ckpt.dir} has ${nOut}×${k}; the adapter was made for a model of another shape`);
      }
    }
  }

  /** Pass 1 of a double-quantised NF4 tensor: every block's absmax, double-quantised and dequantised. */
  private async doubleQuantizedAbsmax(name: string, chunkElements: number): Promise<Float32Array> {
    const info = this.ckpt.info(name);
    const numel = info.shape.reduce((a, d) => a * d, 1);
    if (numel % NF4_BLOCK !== 0) throw new ExportError(`${this.ckpt.dir}: ${name} has ${numel} values, not whole NF4 blocks of ${NF4_BLOCK}`);
    const absmax = new Float32Array(numel / NF4_BLOCK);
    const item = DTYPE_BYTES[info.dtype];
    for await (const { offset, bytes } of this.ckpt.readChunks(name, chunkElements * item)) {
      absmax.set(nf4QuantizeRef(bytesToF32(bytes, info.dtype, `${this.ckpt.dir}: ${name}`)).absmax, offset / item / NF4_BLOCK);
    }
    return nf4DoubleDequantizeRef(nf4DoubleQuantizeRef(absmax));
  }
}

/**
 * Replaces `values` (whole NF4 blocks starting at flat element `start`) by their NF4 round trip:
 * codes from the block's own absmax, value = codebook[code] · absmax in f32, with the
 * double-quantised absmax when given (the codes do not depend on it, as in bitsandbytes).
 */
function nf4RoundTrip(values: Float32Array, start: number, dqAbsmax: Float32Array | undefined): void {
  const { packed, absmax } = nf4QuantizeRef(values);
  const block0 = start / NF4_BLOCK;
  for (let e = 0; e < values.length; e++) {
    const byte = packed[e >> 1];
    const code = (e & 1) === 0 ? byte >> 4 : byte & 15;
    const scale = dqAbsmax ? dqAbsmax[block0 + (e >> 6)] : absmax[e >> 6];
    values[e] = NF4_CODEBOOK[code] * scale;
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}
