/**
 * IEEE binary16 conversions exactly as ggml's software path computes them (ggml-impl.h
 * ggml_compute_fp32_to_fp16 / ggml_compute_fp16_to_fp32): f32 → f16 rounds to nearest, ties to even,
 * overflows to ±inf, and every NaN becomes 0x7E00 (sign kept). Each f32 operation of the C code is
 * one Math.fround here, so the bits agree with llama.cpp's for every input.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

export function bitsF32(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0];
}

const SCALE_TO_INF = 2 ** 112;
const SCALE_TO_ZERO = 2 ** -110;

/** f32 → f16 bits (ggml_compute_fp32_to_fp16). */
export function fp32ToFp16(x: number): number {
  let base = Math.fround(Math.fround(Math.abs(Math.fround(x)) * SCALE_TO_INF) * SCALE_TO_ZERO);
  const w = f32Bits(x);
  const shl1w = (w + w) >>> 0;
  const sign = (w & 0x80000000) >>> 0;
  let bias = (shl1w & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = Math.fround(bitsF32((bias >>> 1) + 0x07800000) + base);
  const bits = f32Bits(base);
  const expBits = (bits >>> 13) & 0x7c00;
  const mantissaBits = bits & 0x0fff;
  const nonsign = expBits + mantissaBits;
  return ((sign >>> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

/** f16 bits → f32 value (exact). */
export function fp16ToFp32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
