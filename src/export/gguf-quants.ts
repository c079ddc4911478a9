/**
 * ggml tensor types and llama.cpp's reference quantisers, transcribed from ggml/src/ggml-quants.c
 * (quantize_row_q4_0_ref, quantize_row_q5_0_ref, quantize_row_q8_0_ref, quantize_row_q4_K_ref with
 * make_qkx2_quants, quantize_row_q6_K_ref with make_qx_quants). These are the functions
 * llama-quantize runs when no importance matrix is given, so a row quantised here has the same bytes
 * as llama.cpp's (tests/export/gguf-quants.test.ts compares against the libggml-base.so that
 * node-llama-cpp ships). Every f32 operation of the C code is one Math.fround: f64 arithmetic on f32
 * inputs rounded once to f32 is the correctly rounded f32 result for + − × ÷ and √, so the
 * emulation is exact. Evaluation order follows C's left-to-right association (`w*l*x` = (w·l)·x).
 *
 * Block layouts (little-endian, `d`/`dmin` are f16):
 *   Q4_0  32 → 18 B: d, qs[16]  (byte j = q[j] | q[j+16] << 4, value (q − 8)·d)
 *   Q5_0  32 → 22 B: d, qh u32 (5th bits), qs[16] (low nibbles as Q4_0), value (q − 16)·d
 *   Q8_0  32 → 34 B: d, qs[32] int8, value q·d
 *   Q4_K 256 → 144 B: d, dmin, scales[12] (8 six-bit scales + 8 six-bit mins), qs[128]
 *   Q6_K 256 → 210 B: ql[128], qh[64], scales[16] int8, d
 */
import { ExportError } from '../errors.js';
import { f32ToBf16Bits } from '../model/bf16.js';
import { bitsF32, fp16ToFp32, fp32ToFp16 } from './half.js';

export type GgmlType = 'F32' | 'F16' | 'BF16' | 'Q4_0' | 'Q5_0' | 'Q8_0' | 'Q4_K' | 'Q6_K';

export interface GgmlTypeInfo {
  /** ggml_type enum value written in the GGUF tensor info. */
  readonly id: number;
  /** Elements per block (row length must be a multiple). */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly blockBytes: number;
}

export const GGML_TYPES: Readonly<Record<GgmlType, GgmlTypeInfo>> = Object.freeze({
  F32: { id: 0, blockSize: 1, blockBytes: 4 },
  F16: { id: 1, blockSize: 1, blockBytes: 2 },
  Q4_0: { id: 2, blockSize: 32, blockBytes: 18 },
  Q5_0: { id: 6, blockSize: 32, blockBytes: 22 },
  Q8_0: { id: 8, blockSize: 32, blockBytes: 34 },
  Q4_K: { id: 12, blockSize: 256, blockBytes: 144 },
  Q6_K: { id: 14, blockSize: 256, blockBytes: 210 },
  BF16: { id: 30, blockSize: 1, blockBytes: 2 },
});

/** Bytes of one row of `n` elements; throws when n is not a multiple of the block size. */
export function rowBytes(type: GgmlType, n: number, where = 'rowBytes'): number {
  const t = GGML_TYPES[type];
  if (n % t.blockSize !== 0) {
    throw new ExportError(`${where}: a row of ${n} elements cannot be stored as ${type}, whose blocks hold ${t.blockSize} elements`);
  }
  return (n / t.blockSize) * t.blockBytes;
}

const fr = Math.fround;
const GROUP_MAX_EPS = fr(1e-15);
const MAGIC = 12582912; // 1.5 · 2^23

/**
 * ggml's nearest_int: it adds 1.5·2^23 in f32 and reads the low mantissa bits, i.e. rounds half to
 * even for |x| < 2^22 (its assert). f32(x + 1.5·2^23) − 1.5·2^23 is the same integer, exactly.
 */
function nearestInt(x: number): number {
  return fr(x + MAGIC) - MAGIC;
}

/** C's roundf: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** Largest |x| of a block and the signed value holding it (first one on ties), as the C loops. */
function signedAbsMax(x: Float32Array, o: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[o + j];
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

function quantizeQ4_0(x: Float32Array, o: number, out: DataView, p: number): void {
  const max = signedAbsMax(x, o, 32);
  const d = fr(max / -8);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(p, fp32ToFp16(d), true);
  for (let j = 0; j < 16; j++) {
    const x0 = fr(x[o + j] * id);
    const x1 = fr(x[o + 16 + j] * id);
    const q0 = Math.min(15, Math.trunc(fr(x0 + 8.5)));
    const q1 = Math.min(15, Math.trunc(fr(x1 + 8.5)));
    out.setUint8(p + 2 + j, (q0 | (q1 << 4)) & 0xff);
  }
}

function quantizeQ5_0(x: Float32Array, o: number, out: DataView, p: number): void {
  const max = signedAbsMax(x, o, 32);
  const d = fr(max / -16);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(p, fp32ToFp16(d), true);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const x0 = fr(x[o + j] * id);
    const x1 = fr(x[o + 16 + j] * id);
    const q0 = Math.min(31, Math.trunc(fr(x0 + 16.5)));
    const q1 = Math.min(31, Math.trunc(fr(x1 + 16.5)));
    out.setUint8(p + 6 + j, (q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= ((q0 & 0x10) >> 4) << j;
    qh |= ((q1 & 0x10) >> 4) << (j + 16);
  }
  out.setUint32(p + 2, qh >>> 0, true);
}

function quantizeQ8_0(x: Float32Array, o: number, out: DataView, p: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]));
  const d = fr(amax / 127);
  const id = d ? fr(1 / d) : 0;
  out.setUint16(p, fp32ToFp16(d), true);
  for (let j = 0; j < 32; j++) out.setInt8(p + 2 + j, roundf(fr(x[o + j] * id)));
}

/**
 * make_qkx2_quants: scale and min of an asymmetric nmax-level quantisation of x[o..o+n) minimising
 * the weighted squared error over a grid of nstep+1 candidate scales. Writes levels to L[lo..];
 * returns the scale and sets `qkx2Min` to −min.
 *
 * Two shortcuts keep the arithmetic of the C code unchanged: x − min is computed once per value of
 * min, and a candidate whose levels equal the previous candidate's is skipped (its sums, error and
 * the comparison with the best error would repeat the previous candidate's exactly).
 */
let qkx2Min = 0;
const qkx2 = { xm: new Float32Array(32) };

function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  o: number,
  weights: Float32Array,
  L: Uint8Array,
  lo: number,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): number {
  const xm = qkx2.xm;
  let min = x[o];
  let max = x[o];
  let sumW = weights[0];
  let sumX = fr(sumW * x[o]);
  for (let i = 1; i < n; i++) {
    const xi = x[o + i];
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i];
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    qkx2Min = -min;
    return 0;
  }
  for (let i = 0; i < n; i++) xm[i] = fr(x[o + i] - min);
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(fr(iscale * xm[i]));
    const q = l < 0 ? 0 : l > nmax ? nmax : l;
    L[lo + i] = q;
    const diff = fr(fr(fr(scale * q) + min) - x[o + i]);
    bestError = fr(bestError + fr(weights[i] * fr(diff * diff)));
  }
  if (nstep < 1) {
    qkx2Min = -min;
    return scale;
  }
  for (let is = 0; is <= nstep; is++) {
    // `min` is the best candidate's so far (C updates it in the loop), so the grid moves with it.
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let same = is > 0;
    for (let i = 0; i < n; i++) {
      const l = nearestInt(fr(iscale * xm[i]));
      const q = l < 0 ? 0 : l > nmax ? nmax : l;
      if (q !== Laux[i]) {
        Laux[i] = q;
        same = false;
      }
    }
    if (same) continue;
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Laux[i];
      const wl = fr(weights[i] * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[o + i]));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * Laux[i]) + thisMin) - x[o + i]);
        curError = fr(curError + fr(weights[i] * fr(diff * diff)));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = curError;
        scale = thisScale;
        if (thisMin !== min) {
          min = thisMin;
          for (let i = 0; i < n; i++) xm[i] = fr(x[o + i] - min);
        }
      }
    }
  }
  qkx2Min = -min;
  return scale;
}

/** get_scale_min_k4: the j-th 6-bit scale and min of a Q4_K block's 12 packed bytes at q[p..]. */
function scaleMinK4(j: number, q: DataView, p: number): [number, number] {
  if (j < 4) return [q.getUint8(p + j) & 63, q.getUint8(p + j + 4) & 63];
  const sc = (q.getUint8(p + j + 4) & 0xf) | ((q.getUint8(p + j - 4) >> 6) << 4);
  const m = (q.getUint8(p + j + 4) >> 4) | ((q.getUint8(p + j) >> 6) << 4);
  return [sc, m];
}

/** Scratch of quantizeQ4_K (one set per module: the quantisers are synchronous). */
const q4k = { L: new Uint8Array(256), Laux: new Uint8Array(32), weights: new Float32Array(32), mins: new Float32Array(8), scales: new Float32Array(8) };

function quantizeQ4_K(x: Float32Array, o: number, out: DataView, p: number): void {
  const { L, Laux, weights, mins, scales } = q4k;
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const s = o + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[s + l] * x[s + l]));
    const avX = fr(Math.sqrt(fr(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(x[s + l]));
    const scale = makeQkx2Quants(32, 15, x, s, weights, L, 32 * j, Laux, -1, fr(0.1), 20);
    const min = qkx2Min;
    scales[j] = scale;
    mins[j] = min;
    if (scale > maxScale) maxScale = scale;
    if (min > maxMin) maxMin = min;
  }
  const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
  const sp = p + 4; // scales[12]
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(fr(invScale * scales[j])) & 0xff);
    const lm = Math.min(63, nearestInt(fr(invMin * mins[j])) & 0xff);
    if (j < 4) {
      out.setUint8(sp + j, ls);
      out.setUint8(sp + j + 4, lm);
    } else {
      out.setUint8(sp + j + 4, (ls & 0xf) | ((lm & 0xf) << 4));
      out.setUint8(sp + j - 4, out.getUint8(sp + j - 4) | ((ls >> 4) << 6));
      out.setUint8(sp + j, out.getUint8(sp + j) | ((lm >> 4) << 6));
    }
  }
  const dBits = fp32ToFp16(fr(maxScale / 63));
  const dminBits = fp32ToFp16(fr(maxMin / 63));
  out.setUint16(p, dBits, true);
  out.setUint16(p + 2, dminBits, true);
  const dAll = fp16ToFp32(dBits);
  const dminAll = fp16ToFp32(dminBits);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(j, out, sp);
    const d = fr(dAll * sc);
    if (!d) continue;
    const dm = fr(dminAll * m);
    for (let ii = 0; ii < 32; ii++) {
      const l = nearestInt(fr(fr(x[o + 32 * j + ii] + dm) / d));
      L[32 * j + ii] = Math.max(0, Math.min(15, l));
    }
  }
  const qp = p + 16;
  for (let j = 0, q = qp; j < 256; j += 64, q += 32) {
    for (let l = 0; l < 32; l++) out.setUint8(q + l, L[j + l] | (L[j + l + 32] << 4));
  }
}

/**
 * make_qx_quants with rmse_type 1 and no importance weights (w = x²): a symmetric quantisation to
 * levels −nmax..nmax−1 of x[o..o+n), the scale searched over 19 candidates. Levels + nmax go to L[lo..].
 * w and w·x are computed once; a candidate with the previous candidate's levels is skipped (same
 * sums, same outcome).
 */
const qx = { w: new Float32Array(16), wx: new Float32Array(16), prev: new Int8Array(16) };

function makeQxQuants(n: number, nmax: number, x: Float32Array, o: number, L: Int8Array, lo: number): number {
  const { w, wx, prev } = qx;
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[o + i]);
    if (ax > amax) {
      amax = ax;
      max = x[o + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  for (let i = 0; i < n; i++) {
    const xi = x[o + i];
    w[i] = fr(xi * xi);
    wx[i] = fr(w[i] * xi);
  }
  let iscale = fr(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const r = nearestInt(fr(iscale * x[o + i]));
    const l = r < -nmax ? -nmax : r > nmax - 1 ? nmax - 1 : r;
    L[lo + i] = l + nmax;
    sumlx = fr(sumlx + fr(wx[i] * l));
    suml2 = fr(suml2 + fr(fr(w[i] * l) * l));
  }
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  let first = true;
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(fr(0.1) * is)) / max);
    let same = !first;
    first = false;
    for (let i = 0; i < n; i++) {
      const r = nearestInt(fr(iscale * x[o + i]));
      const l = r < -nmax ? -nmax : r > nmax - 1 ? nmax - 1 : r;
      if (l !== prev[i]) {
        prev[i] = l;
        same = false;
      }
    }
    if (same) continue;
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const l = prev[i];
      sumlx = fr(sumlx + fr(wx[i] * l));
      suml2 = fr(suml2 + fr(fr(w[i] * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[lo + i] = nmax + prev[i];
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

const q6k = { L: new Int8Array(256), scales: new Float32Array(16) };

function quantizeQ6_K(x: Float32Array, o: number, out: DataView, p: number): void {
  const { L, scales } = q6k;
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants(16, 32, x, o + 16 * ib, L, 16 * ib);
    scales[ib] = scale;
    const abs = Math.abs(scale);
    if (abs > maxAbsScale) {
      maxAbsScale = abs;
      maxScale = scale;
    }
  }
  if (maxAbsScale < GROUP_MAX_EPS) {
    for (let i = 0; i < 210; i++) out.setUint8(p + i, 0);
    out.setUint16(p + 208, fp32ToFp16(0), true);
    return;
  }
  const iscale = fr(-128 / maxScale);
  const dBits = fp32ToFp16(fr(1 / iscale));
  out.setUint16(p + 208, dBits, true);
  const sp = p + 192;
  for (let ib = 0; ib < 16; ib++) out.setInt8(sp + ib, Math.min(127, nearestInt(fr(iscale * scales[ib]))));
  const dAll = fp16ToFp32(dBits);
  for (let j = 0; j < 16; j++) {
    const d = fr(dAll * out.getInt8(sp + j));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) {
      const l = Math.max(-32, Math.min(31, nearestInt(fr(x[o + 16 * j + ii] / d))));
      L[16 * j + ii] = l + 32;
    }
  }
  for (let j = 0, ql = p, qh = p + 128; j < 256; j += 128, ql += 64, qh += 32) {
    for (let l = 0; l < 32; l++) {
      const q1 = L[j + l] & 0xf;
      const q2 = L[j + l + 32] & 0xf;
      const q3 = L[j + l + 64] & 0xf;
      const q4 = L[j + l + 96] & 0xf;
      out.setUint8(ql + l, q1 | (q3 << 4));
      out.setUint8(ql + l + 32, q2 | (q4 << 4));
      out.setUint8(qh + l, (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
    }
  }
}

type BlockQuantizer = (x: Float32Array, o: number, out: DataView, p: number) => void;
const BLOCK_QUANTIZERS: Partial<Record<GgmlType, BlockQuantizer>> = {
  Q4_0: quantizeQ4_0,
  Q5_0: quantizeQ5_0,
  Q8_0: quantizeQ8_0,
  Q4_K: quantizeQ4_K,
  Q6_K: quantizeQ6_K,
};

/**
 * Encodes rows of `nPerRow` f32 values (x.length a multiple of nPerRow) as `type`: F32 bytes as is,
 * F16 / BF16 rounded to nearest even (ggml's conversions), quantised types with llama.cpp's
 * reference quantisers. Returns the bytes as they go into the GGUF data section.
 */
export function quantizeRows(type: GgmlType, x: Float32Array, nPerRow: number, where = 'quantizeRows'): Uint8Array {
  if (x.length % nPerRow !== 0) throw new ExportError(`${where}: ${x.length} values are not whole rows of ${nPerRow}`);
  const rows = x.length / nPerRow;
  const bytes = rowBytes(type, nPerRow, where) * rows;
  const out = new Uint8Array(bytes);
  switch (type) {
    case 'F32':
      new Float32Array(out.buffer).set(x);
      return out;
    case 'F16': {
      const h = new Uint16Array(out.buffer);
      for (let i = 0; i < x.length; i++) h[i] = fp32ToFp16(x[i]);
      return out;
    }
    case 'BF16': {
      const h = new Uint16Array(out.buffer);
      for (let i = 0; i < x.length; i++) h[i] = f32ToBf16Bits(x[i]);
      return out;
    }
    default: {
      const q = BLOCK_QUANTIZERS[type]!;
      const { blockSize, blockBytes } = GGML_TYPES[type];
      const view = new DataView(out.buffer);
      for (let b = 0, n = x.length / blockSize; b < n; b++) q(x, b * blockSize, view, b * blockBytes);
      return out;
    }
  }
}

/** Decodes `count` elements stored as `type` (ggml's dequantize_row_* arithmetic, in f32). */
export function dequantizeRows(type: GgmlType, bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const { blockSize, blockBytes } = GGML_TYPES[type];
  const h = (p: number): number => fp16ToFp32(v.getUint16(p, true));
  for (let b = 0; b < count / blockSize; b++) {
    const p = b * blockBytes;
    const y = b * blockSize;
    switch (type) {
      case 'F32':
        out[y] = v.getFloat32(p, true);
        break;
      case 'F16':
        out[y] = h(p);
        break;
      case 'BF16':
        out[y] = bitsF32(v.getUint16(p, true) << 16);
        break;
      case 'Q4_0':
      case 'Q5_0': {
        const d = h(p);
        const five = type === 'Q5_0';
        const qh = five ? v.getUint32(p + 2, true) : 0;
        const qs = p + (five ? 6 : 2);
        for (let j = 0; j < 16; j++) {
          const byte = v.getUint8(qs + j);
          const hi0 = five ? ((qh >>> j) << 4) & 0x10 : 0;
          const hi1 = five ? (qh >>> (j + 12)) & 0x10 : 0;
          const off = five ? 16 : 8;
          out[y + j] = fr(((byte & 0xf) | hi0) - off) * d;
          out[y + j + 16] = fr(((byte >> 4) | hi1) - off) * d;
        }
        break;
      }
      case 'Q8_0': {
        const d = h(p);
        for (let j = 0; j < 32; j++) out[y + j] = v.getInt8(p + 2 + j) * d;
        break;
      }
      case 'Q4_K': {
        const d = h(p);
        const dmin = h(p + 2);
        for (let j = 0, q = p + 16, is = 0; j < 256; j += 64, q += 32, is += 2) {
          const [s1, m1] = scaleMinK4(is, v, p + 4);
          const [s2, m2] = scaleMinK4(is + 1, v, p + 4);
          const d1 = fr(d * s1);
          const mm1 = fr(dmin * m1);
          const d2 = fr(d * s2);
          const mm2 = fr(dmin * m2);
          for (let l = 0; l < 32; l++) {
            out[y + j + l] = fr(fr(d1 * (v.getUint8(q + l) & 0xf)) - mm1);
            out[y + j + 32 + l] = fr(fr(d2 * (v.getUint8(q + l) >> 4)) - mm2);
          }
        }
        break;
      }
      case 'Q6_K': {
        const d = h(p + 208);
        for (let n = 0, ql = p, qh = p + 128, sc = p + 192; n < 256; n += 128, ql += 64, qh += 32, sc += 8) {
          for (let l = 0; l < 32; l++) {
            const is = l >> 4;
            const hb = v.getUint8(qh + l);
            const a = v.getUint8(ql + l);
            const c = v.getUint8(ql + l + 32);
            out[y + n + l] = fr(fr(d * v.getInt8(sc + is)) * (((a & 0xf) | ((hb & 3) << 4)) - 32));
            out[y + n + l + 32] = fr(fr(d * v.getInt8(sc + is + 2)) * (((c & 0xf) | (((hb >> 2) & 3) << 4)) - 32));
            out[y + n + l + 64] = fr(fr(d * v.getInt8(sc + is + 4)) * ((a >> 4 | (((hb >> 4) & 3) << 4)) - 32));
            out[y + n + l + 96] = fr(fr(d * v.getInt8(sc + is + 6)) * ((c >> 4 | (((hb >> 6) & 3) << 4)) - 32));
          }
        }
        break;
      }
    }
  }
  return out;
}
