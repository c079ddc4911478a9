// Per-row scale that keeps a row inside f16's range before it is converted to f16 (issue 11 item 4):
//   amax[m]      = max_k |X[m][k]|
//   rowScale[m]  = 2^e,  e = clamp(14 − ceil(log2 amax[m]), −126, 126)
//                = 1     when amax[m] is 0, infinite or NaN
// so that |X[m][k]·rowScale[m]| ≤ 2^14 (f16's largest finite value is 65504 ≈ 2^16, two octaves of
// headroom for the rounding of the staged values and for sums of a few of them) and the row's
// largest element lands in [2^13, 2^14], where f16 keeps 11 significant bits down to 2^-27 of it.
// A row holding a NaN or ±Inf keeps scale 1, so the non-finite value reaches the output (and the
// step's NaN check) instead of being scaled away. The scale is a power of two: multiplying by it
// and by 1 / rowScale in the matmul's f32 epilogue is exact (clamping e keeps both 2^e and 2^-e
// normal f32, which GPUs do not flush; only rows with amax ≤ 2^-113 reach the clamp).
//
// Everything is done on the bits, with no float operation (shaders/lib/f16_scale.wgsl: amax is a
// u32 max of the sign-cleared bits, ceilLog2 and scaleFor the rule above).
//
// Bindings (group 0):
//   0 params     uniform    RowScaleParams { m, k }
//   1 row_scale  read_write (M) f32   the scale of each row
//   2 x          read       (M, K) f32, read as u32 bits
// Dispatch: foldGrid(M) workgroups of WG invocations (shaders/lib/grid_fold.wgsl), one per row;
// invocation t takes the maximum of |X[m][k]| over k ≡ t (mod WG), then a tree in workgroup
// memory takes the row's maximum. Saves nothing.

override WG: u32 = 256u;

struct RowScaleParams {
  m: u32,
  k: u32,
}

@group(0) @binding(0) var<uniform> params: RowScaleParams;
@group(0) @binding(1) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;

var<workgroup> partial: array<u32, WG>;

// #include "lib/grid_fold.wgsl"
// #include "lib/f16_scale.wgsl"
// #include "lib/workgroup_max.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = foldedWorkgroup(wg);
  // rows past M (the last fold row) take part in the barriers and write nothing
  let live = row < params.m;
  var a = 0u;
  if (live) {
    let base = row * params.k;
    for (var j = lid; j < params.k; j += WG) {
      a = max(a, x[base + j] & 0x7fffffffu);
    }
  }
  let amax = workgroupMaxU32(lid, a);
  if (live && lid == 0u) {
    row_scale[row] = scaleFor(amax);
  }
}
