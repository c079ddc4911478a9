// Fused lm_head + cross-entropy backward, last pass: the S slices of cross_entropy_fused_backward.wgsl
// added in slice order (deterministic) and put back at the positions:
//   dx[p, k] = Σ_s dxPartial[s, rowOf[p], k]     if rowOf[p] ≥ 0
//            = 0                                 otherwise (no target: no gradient)
//
// Bindings (group 0):
//   0 params     uniform    CrossEntropyFusedDxParams { rows, hidden, slices }   N, D, S
//   1 dx         read_write (N, D) f32 — by position
//   2 dxPartial  read       (S, N, D) f32 — by compact row
//   3 rowOf      read       (N) i32 — compact row of each position, −1 for none
//
// Dispatch: (gx, gy) workgroups of WG with gx·gy·WG ≥ N·D; invocation e = (wg.y·gx + wg.x)·WG + l
// writes element e = p·D + k. Saves nothing.

override WG: u32 = 64u;

struct CrossEntropyFusedDxParams {
  rows: u32,
  hidden: u32,
  slices: u32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyFusedDxParams;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dxPartial: array<f32>;
@group(0) @binding(3) var<storage, read> rowOf: array<i32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let e = (wg.y * nwg.x + wg.x) * WG + lid;
  let D = params.hidden;
  if (e >= params.rows * D) {
    return;
  }
  let p = e / D;
  let k = e % D;
  let r = rowOf[p];
  var sum = 0.0;
  if (r >= 0) {
    for (var s = 0u; s < params.slices; s++) {
      sum += dxPartial[(s * params.rows + u32(r)) * D + k];
    }
  }
  dx[e] = sum;
}
