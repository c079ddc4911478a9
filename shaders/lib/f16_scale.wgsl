// The power-of-two scale that keeps a block of f32 values inside f16's range before it is
// converted to f16 (issue 11 item 4), from the bits of the block's largest |x|:
//   scale = 2^e,  e = clamp(14 − ceil(log2 amax), −126, 126)
//         = 1     when amax is 0, infinite or NaN
// Everything is done on the bits, with no float operation, so NaN ordering, flushed subnormals or
// an inexact log2 cannot change the result: for f32 bits b ≥ 0 (sign cleared) the unsigned order
// of b is the order of |x| (+Inf is 0x7f800000, every NaN above it), so amax is a u32 max of
// `bits & 0x7fffffffu`; ceil(log2 amax) is the exponent field minus 127, plus 1 when the mantissa
// is not zero (normal amax), or 32 − clz(mantissa − 1) − 149 (subnormal amax = mantissa·2^-149).
// Used by shaders/row_scale.wgsl (one scale per row), shaders/f16_pack.wgsl (saved activations),
// shaders/matmul_sgm_forward.wgsl (the LoRA term's U and L rows) and shaders/head_scale.wgsl (one per batch
// row and head); the float64 twin of the rule is rowScaleRef in src/kernels/row-scale.ts.

// ceil(log2 v) for the bits of a finite positive f32 (0 < bits < 0x7f800000).
fn ceilLog2(bits: u32) -> i32 {
  let exponent = bits >> 23u;
  let mantissa = bits & 0x7fffffu;
  if (exponent == 0u) {
    return i32(32u - countLeadingZeros(mantissa - 1u)) - 149;
  }
  return i32(exponent) - 127 + select(0, 1, mantissa != 0u);
}

// The scale for a block whose largest |x| has bits `amax` (sign cleared).
fn scaleFor(amax: u32) -> f32 {
  if (amax == 0u || amax >= 0x7f800000u) {
    return 1.0;
  }
  let e = clamp(14 - ceilLog2(amax), -126, 126);
  return bitcast<f32>(u32(e + 127) << 23u);
}
