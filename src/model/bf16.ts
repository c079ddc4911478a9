/**
 * bfloat16 conversions. bf16 is the top 16 bits of an IEEE f32; f32 → bf16 rounds to nearest,
 * ties to even (as torch's `.to(torch.bfloat16)`), NaN stays NaN.
 */
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16BitsToF32(bits: number): number {
  u32[0] = (bits & 0xffff) << 16;
  return f32[0];
}

export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Rounds every element to the nearest bf16 value (still stored as f32). */
export function roundToBf16(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = bf16BitsToF32(f32ToBf16Bits(x[i]));
  return out;
}

/** bf16 words (as in a safetensors file) → f32. */
export function bf16ToF32Array(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const ou = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) ou[i] = bits[i] << 16;
  return out;
}

/** f32 → bf16 words (round to nearest even). */
export function f32ToBf16Array(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToBf16Bits(x[i]);
  return out;
}
