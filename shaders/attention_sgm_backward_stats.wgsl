// Flash attention backward on subgroup matrices, pass 1 of 3: the row statistics of each query.
//
// For every (token n, query head h):
//   stats[n, h] = (lse[n, h] · log2 e,  Σ_d dO[n, h, d] · O[n, h, d])
// the forward's log-sum-exp in base-2 units (P = exp2(s₂ − lse₂) with scores in base 2) and delta
// (= Σ_j P_ij · dP_ij, subtracted by the softmax Jacobian: dS_ij = P_ij (dP_ij − delta_i)), in one
// vec2 so that the two later passes (attention_sgm_backward_dq.wgsl, _dkdv.wgsl) bind one buffer
// for both. The f32 path's pass 1 (attention_backward_delta.wgsl) computes delta alone the same way.
//
// Bindings (group 0):
//   0 params  uniform    AttentionStatsParams { rows = B·T·H }
//   1 stats   read_write (B·T, H) vec2<f32>  output
//   2 dO      read       (B·T, H·Dh) f32     gradient of the attention output
//   3 o       read       (B·T, H·Dh) f32     the forward's attention output
//   4 lse     read       (B·T, H) f32        the forward's log-sum-exp (natural log)
// Override constants: DH head dim (multiple of 4), RT threads per row (a power of two), WG threads
// per workgroup (a multiple of RT).
// Dispatch: foldGrid(ceil(rows / (WG/RT))) workgroups; the RT threads of a row stride over its
// DH/4 vec4 (coalesced), then the row's first thread adds their partials in a fixed order.
// Saves nothing.

// #include "lib/grid_fold.wgsl"

override DH: u32 = 128u;
override RT: u32 = 8u;
override WG: u32 = 256u;

const LOG2E: f32 = 1.4426950408889634;

override DH4: u32 = DH / 4u;
override RPW: u32 = WG / RT;

struct AttentionStatsParams {
  rows: u32,
}

@group(0) @binding(0) var<uniform> params: AttentionStatsParams;
@group(0) @binding(1) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> o: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = foldedWorkgroup(wg) * RPW + lid / RT;
  let lane = lid % RT;
  var s = 0.0;
  if (row < params.rows) {
    for (var d4 = lane; d4 < DH4; d4 += RT) {
      s += dot(dO[row * DH4 + d4], o[row * DH4 + d4]);
    }
  }
  partial[lid] = s;
  workgroupBarrier();
  if (lane == 0u && row < params.rows) {
    var t = 0.0;
    for (var j = 0u; j < RT; j++) {
      t += partial[lid + j];
    }
    stats[row] = vec2<f32>(lse[row] * LOG2E, t);
  }
}
