/**
 * Random weights for the matmul benches (bench/matmul.ts, bench/matmul-sgm.ts) in every stored
 * format, with each row's dense float64 values for the sampled reference, and that reference.
 */
import type { Gpu } from '../src/kernels/gpu.js';
import type { LinearWeight, StoredFormat } from '../src/kernels/matmul.js';
import { dynamicMap, NF4_CODEBOOK } from '../src/kernels/nf4.js';
import type { Tensor } from '../src/kernels/tensor.js';

/** xorshift32 words: fast enough for the lm_head's 195 M weight words and 156 M gradients. */
export class Words {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s >>> 0;
    return this.s;
  }
  /** A uniform number in [0, 1). */
  unit(): number {
    return this.next() / 4294967296;
  }
  /** A uniform number in [−1, 1). */
  signed(): number {
    return this.unit() * 2 - 1;
  }
}

/** A random bf16 in ±[2^-8, 2^-4): sign, exponent 119..122, random mantissa. */
export function bf16Bits(r: number): number {
  return ((r & 0x8000) | ((119 + ((r >>> 7) & 3)) << 7) | (r & 0x7f)) & 0xffff;
}

export function bf16Value(bits: number): number {
  const f = new Float32Array(new Uint32Array([bits << 16]).buffer);
  return f[0];
}

export interface BenchWeight {
  readonly w: LinearWeight;
  /** Dense row j of W as float64 (for the sampled reference). */
  row(j: number): Float64Array;
}

export function makeWeight(gpu: Gpu, format: StoredFormat, n: number, k: number, seed: number): BenchWeight {
  const rnd = new Words(seed);
  const shape = [n, k];
  if (format === 'f32') {
    const v = new Float32Array(n * k);
    for (let i = 0; i < v.length; i++) v[i] = ((rnd.next() / 4294967296) * 2 - 1) * 0.05;
    const data = gpu.tensorFrom('w f32', shape, 'f32', v);
    return { w: { format, nOut: n, k, data }, row: (j) => Float64Array.from(v.subarray(j * k, (j + 1) * k)) };
  }
  if (format === 'bf16') {
    const words = new Uint32Array(Math.ceil((n * k) / 2));
    for (let i = 0; i < words.length; i++) {
      words[i] = (bf16Bits(rnd.next()) | (bf16Bits(rnd.next()) << 16)) >>> 0;
    }
    const data = gpu.tensorFrom('w bf16', shape, 'bf16x2', words);
    const halves = new Uint16Array(words.buffer);
    return { w: { format, nOut: n, k, data }, row: (j) => Float64Array.from(halves.subarray(j * k, (j + 1) * k), bf16Value) };
  }
  const blocks = (n * k) / 64;
  const packed = new Uint32Array((n * k) / 8);
  for (let i = 0; i < packed.length; i++) packed[i] = rnd.next();
  const bytes = new Uint8Array(packed.buffer);
  const absmax = new Float32Array(blocks);
  for (let i = 0; i < blocks; i++) absmax[i] = 0.02 + (rnd.next() / 4294967296) * 0.04;
  const data = gpu.tensorFrom('w nf4', shape, 'nf4x8', packed);
  let scale = (b: number) => absmax[b];
  let w: LinearWeight;
  if (format === 'nf4') {
    w = { format: 'nf4', nOut: n, k, data, absmax: gpu.tensorFrom('absmax', [blocks], 'f32', absmax) };
  } else {
    // random double-quantised scales: codes, chunk scales and an offset
    const codes = new Uint8Array(Math.ceil(blocks / 4) * 4);
    for (let i = 0; i < blocks; i++) codes[i] = rnd.next() & 0xff;
    const absmax2 = new Float32Array(Math.ceil(blocks / 256)).fill(0.02);
    const map = dynamicMap();
    scale = (b) => Math.fround(Math.fround(map[codes[b]] * absmax2[b >> 8]) + 0.03);
    w = {
      format: 'nf4',
      nOut: n,
      k,
      data,
      doubleQuant: {
        codes: gpu.tensorFrom('codes', [blocks], 'u8x4', codes.subarray(0, Math.ceil(blocks / 4) * 4)),
        absmax2: gpu.tensorFrom('absmax2', [absmax2.length], 'f32', absmax2),
        offset: 0.03,
      },
    };
  }
  return {
    w,
    row: (j) => {
      const out = new Float64Array(k);
      for (let c = 0; c < k; c++) {
        const e = j * k + c;
        const byte = bytes[e >> 1];
        out[c] = NF4_CODEBOOK[(e & 1) === 0 ? byte >> 4 : byte & 15] * scale(e >> 6);
      }
      return out;
    },
  };
}

/** Largest |y − ref| / Σ|x·w| over 64 sampled outputs (ref a float64 dot product). */
export async function sampledError(gpu: Gpu, y: Tensor, x: ArrayLike<number>, bw: Pick<BenchWeight, 'row'>, m: number, n: number, k: number): Promise<number> {
  const out = await gpu.readF32(y);
  const rnd = new Words(7);
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = s === 0 ? m - 1 : rnd.next() % m;
    const j = s === 0 ? n - 1 : rnd.next() % n;
    const w = bw.row(j);
    let ref = 0;
    let mag = 0;
    for (let c = 0; c < k; c++) {
      ref += x[i * k + c] * w[c];
      mag += Math.abs(x[i * k + c] * w[c]);
    }
    const err = Math.abs(out[i * n + j] - ref) / Math.max(mag, 1e-30);
    worst = Number.isFinite(err) ? Math.max(worst, err) : Infinity;
  }
  return worst;
}
