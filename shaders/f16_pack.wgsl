// f16 storage of saved activations (issue 11 item 4), the pack half of src/kernels/f16-pack.ts:
//   scale[m]  = the power-of-two scale of row m of X (shaders/lib/f16_scale.wgsl: the row's largest
//               |x| lands in [2^13, 2^14]; 1 for a row of zeros or one holding NaN/±Inf)
//   Y[m][k]   = f16(X[m][k] · scale[m])
// for X (M, K) f32, so that neither activations past f16's 65504 overflow nor tiny rows underflow:
// every element keeps f16's 11 significant bits down to 2^-27 of its row's largest (below, the
// subnormals' absolute spacing 2^-24 in scaled units). shaders/f16_unpack.wgsl undoes it exactly
// but for that rounding (X ≈ Y / scale: a power of two).
//
// Bindings (group 0):
//   0 params  uniform    F16PackParams { m, k }
//   1 y       read_write (M, K) f16
//   2 scale   read_write (M) f32
//   3 x       read       (M, K) f32
// Dispatch: foldGrid(M) workgroups of WG invocations (shaders/lib/grid_fold.wgsl), one per row;
// invocation t takes the maximum of |X[m][k]| over k ≡ t (mod WG) on the bits (a u32 max of the
// sign-cleared bits, as row_scale.wgsl), a tree in workgroup memory the row's, then every
// invocation converts its elements. Saves nothing.

enable f16;

override WG: u32 = 256u;

struct F16PackParams {
  m: u32,
  k: u32,
}

@group(0) @binding(0) var<uniform> params: F16PackParams;
@group(0) @binding(1) var<storage, read_write> y: array<f16>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;

var<workgroup> partial: array<u32, WG>;

// #include "lib/grid_fold.wgsl"
// #include "lib/f16_scale.wgsl"
// #include "lib/workgroup_max.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = foldedWorkgroup(wg);
  // rows past M (the last fold row) take part in the barriers and write nothing
  let live = row < params.m;
  let base = row * params.k;
  var a = 0u;
  if (live) {
    for (var j = lid; j < params.k; j += WG) {
      a = max(a, bitcast<u32>(x[base + j]) & 0x7fffffffu);
    }
  }
  let amax = workgroupMaxU32(lid, a);
  if (!live) {
    return;
  }
  let s = scaleFor(amax);
  for (var j = lid; j < params.k; j += WG) {
    y[base + j] = f16(x[base + j] * s);
  }
  if (lid == 0u) {
    scale[row] = s;
  }
}
