// f16 storage of saved activations, the unpack half of src/kernels/f16-pack.ts (shaders/f16_pack.wgsl
// has the rule): X[m][k] = f32(Y[m][k]) · (1 / scale[m]) for Y (M, K) f16 — exact but for the
// pack's rounding, scale[m] being a power of two between 2^-126 and 2^126.
//
// Bindings (group 0):
//   0 params  uniform    F16PackParams { m, k } (the pack's)
//   1 x       read_write (M, K) f32
//   2 y       read       (M, K) f16
//   3 scale   read       (M) f32
// Dispatch: one element per invocation, WG invocations per workgroup, foldGrid(ceil(M·K / WG))
// workgroups (shaders/lib/grid_fold.wgsl). Saves nothing.

enable f16;

override WG: u32 = 256u;

struct F16PackParams {
  m: u32,
  k: u32,
}

@group(0) @binding(0) var<uniform> params: F16PackParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f16>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;

// #include "lib/grid_fold.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = foldedWorkgroup(wg) * WG + lid;
  if (e >= params.m * params.k) {
    return;
  }
  x[e] = f32(y[e]) * (1.0 / scale[e / params.k]);
}
