// Scale of NF4 block b (FORMAT 2: stored f32; FORMAT 3: map[code] · absmax2 + offset), for the
// dequant-matmul shaders that read W's block scales where they decode it (matmul_forward,
// matmul_backward_input, matmul_sgm_forward). Not self-contained: the including shader declares
// `override FORMAT: u32`, the bindings `absmax` (array<u32>: FORMAT 2 f32 bits, FORMAT 3 u8x4
// codes), `absmax2` (array<f32>), `qmap` (array<f32>) and a `params` with an f32 `offset` (the
// double-quantisation mean). matvec_forward (map read from workgroup memory), nf4_dequantize
// (DOUBLE_QUANT, no FORMAT) and matmul_sgm_input (block scale loaded and decoded in two steps, for
// its prefetch) keep their own.
fn blockScale(b: u32) -> f32 {
  if (FORMAT == 3u) {
    let code = (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu;
    return qmap[code] * absmax2[b >> 8u] + params.offset;
  }
  return bitcast<f32>(absmax[b]);
}
