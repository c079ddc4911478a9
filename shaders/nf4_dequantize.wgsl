// NF4 dequantisation of a weight: out[e] = NF4_CODEBOOK[code[e]] · absmax(e >> 6), in f32
// (bitsandbytes' kDequantizeBlockwise for NF4). With DOUBLE_QUANT the block scales are themselves
// 8-bit codes: absmax(b) = qmap[codes[b]] · absmax2[b >> 8] + offset (bitsandbytes'
// dequantize_blockwise of the statistics, then `+= offset`).
//
// Bindings (group 0):
//   0 params   uniform    Nf4DequantizeParams { numel, offset }  offset used with DOUBLE_QUANT only
//   1 out      read_write (numel) f32
//   2 packed   read       (numel / 8) u32 nf4x8 (element 8i+2j in the high nibble of byte j of word i)
//   3 absmax   read       (numel / 64) f32 bits, or with DOUBLE_QUANT the u8x4 codes (4 per word)
//   4 absmax2  read       (ceil(numel / 64 / 256)) f32, with DOUBLE_QUANT (else any 4-byte buffer)
//   5 qmap     read       (256) f32 bitsandbytes' signed dynamic map, with DOUBLE_QUANT
// Dispatch: one thread per packed word (8 outputs), WG threads per workgroup, workgroups
// (min(G, 65535), ceil(G / 65535)) with G = ceil(numel / 8 / WG). Saves nothing.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;
override DOUBLE_QUANT: bool = false;

struct Nf4DequantizeParams {
  numel: u32,
  offset: f32,
}

@group(0) @binding(0) var<uniform> params: Nf4DequantizeParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> packed: array<u32>;
@group(0) @binding(3) var<storage, read> absmax: array<u32>;
@group(0) @binding(4) var<storage, read> absmax2: array<f32>;
@group(0) @binding(5) var<storage, read> qmap: array<f32>;

// #include "lib/nf4_codebook.wgsl"

fn blockScale(b: u32) -> f32 {
  if (DOUBLE_QUANT) {
    let code = (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu;
    return qmap[code] * absmax2[b >> 8u] + params.offset;
  }
  return bitcast<f32>(absmax[b]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let word = (foldedWorkgroup(wg)) * WG + lid.x;
  if (word * 8u >= params.numel) {
    return;
  }
  let codebook = NF4_CODEBOOK;
  let scale = blockScale(word >> 3u);
  let q = packed[word];
  for (var j = 0u; j < 4u; j++) {
    let byte = (q >> (8u * j)) & 0xffu;
    out[word * 8u + 2u * j] = bitcast<f32>(codebook[byte >> 4u]) * scale;
    out[word * 8u + 2u * j + 1u] = bitcast<f32>(codebook[byte & 15u]) * scale;
  }
}
