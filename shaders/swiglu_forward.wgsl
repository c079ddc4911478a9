// SwiGLU forward: act[i] = silu(gate[i]) * up[i] = gate[i] * up[i] / (1 + exp(-gate[i])).
//
// Bindings (group 0):
//   0 params  uniform    SwigluParams { count }      number of elements (N·F)
//   1 act     read_write (N, F) f32                   output
//   2 gate    read       (N, F) f32                   gate_proj output
//   3 up      read       (N, F) f32                   up_proj output
// Dispatch: (min(ceil(count / WG), 65535), ceil(count / (65535·WG))) workgroups of WG threads;
// element index = (wg.y · 65535 + wg.x) · WG + local.x.
// Saves nothing: the backward pass recomputes silu from gate.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;

struct SwigluParams {
  count: u32,
}

@group(0) @binding(0) var<uniform> params: SwigluParams;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
@group(0) @binding(3) var<storage, read> up: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (foldedWorkgroup(wg)) * WG + lid.x;
  if (i >= params.count) {
    return;
  }
  let g = gate[i];
  act[i] = g * up[i] / (1.0 + exp(-g));
}
