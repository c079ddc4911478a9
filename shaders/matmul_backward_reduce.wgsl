// Matmul backward, the sum of a split reduction's slices, in a fixed order (deterministic):
//   out[e] = [out[e] +] scale · (partial[0, e] + partial[1, e] + … + partial[S−1, e])
// for e < count, where partial (S, count) holds what matmul_backward_input.wgsl or
// matmul_weight_grad.wgsl wrote for each slice of their reduction (scale 1, no accumulate).
//
// Bindings (group 0):
//   0 params   uniform    MatmulSliceSumParams { count, slices, scale, accumulate }
//                         accumulate ≠ 0: out += …
//   1 out      read_write (count) f32, dX (M, K) or dW (N, K)
//   2 partial  read       (S, count) f32 scratch
// Dispatch: one element per invocation, WG invocations per workgroup, workgroups
// (min(G, 65535), ceil(G / 65535)) with G = ceil(count / WG); element e = (wg.y·65535 + wg.x)·WG +
// local.x. Consecutive invocations read consecutive floats of each slice (coalesced). Saves nothing.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;

struct MatmulSliceSumParams {
  count: u32,
  slices: u32,
  scale: f32,
  accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: MatmulSliceSumParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let e = (foldedWorkgroup(wg)) * WG + lid.x;
  if (e >= params.count) {
    return;
  }
  var s = 0.0;
  for (var z = 0u; z < params.slices; z++) {
    s += partial[z * params.count + e];
  }
  if (params.accumulate != 0u) {
    out[e] = out[e] + params.scale * s;
  } else {
    out[e] = params.scale * s;
  }
}
