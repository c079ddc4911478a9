// Mean of the NF4 block scales, the `offset` of bitsandbytes' double quantisation
// (quantize_4bit with compress_statistics: offset = absmax.mean(); absmax -= offset):
//   offset[0] = (Σ_i absmax[i]) / count, summed in f32 per thread (strided), then a tree in
//   workgroup memory. The order differs from torch's mean, so offset may differ from a float64
//   mean by a few ulp; the codes are exact for whatever offset this kernel wrote.
//
// Bindings (group 0):
//   0 params  uniform    Nf4DoubleQuantizeMeanParams { count }  number of block scales
//   1 offset  read_write (1) f32
//   2 absmax  read       (count) f32
// Dispatch: one workgroup of WG threads (WG a power of two). Saves nothing.

override WG: u32 = 256u;

struct Nf4DoubleQuantizeMeanParams {
  count: u32,
}

@group(0) @binding(0) var<uniform> params: Nf4DoubleQuantizeMeanParams;
@group(0) @binding(1) var<storage, read_write> offset: array<f32>;
@group(0) @binding(2) var<storage, read> absmax: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  var s = 0.0;
  for (var i = lid.x; i < params.count; i += WG) {
    s += absmax[i];
  }
  partial[lid.x] = s;
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    workgroupBarrier();
    if (lid.x < half) {
      partial[lid.x] += partial[lid.x + half];
    }
  }
  if (lid.x == 0u) {
    offset[0] = partial[0] / f32(params.count);
  }
}
