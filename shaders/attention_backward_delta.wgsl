// Flash attention backward, pass 1 of 3: the row statistic of the softmax backward.
//
// For every (token n, query head h):   delta[n, h] = Σ_d dO[n, h, d] · O[n, h, d]
// (= Σ_j P_ij · dP_ij, the term that the softmax Jacobian subtracts: dS_ij = P_ij (dP_ij − delta_i)).
// Both later passes (attention_backward_dkdv.wgsl, attention_backward_dq.wgsl) read it.
//
// Bindings (group 0):
//   0 params  uniform    AttentionBackwardParams { batch, tokens, qHeads, kvHeads, scale }
//                        (rows = batch·tokens·qHeads; kvHeads and scale unused here)
//   1 delta   read_write (B·T, H) f32       output, one value per (token, head)
//   2 dO      read       (B·T, H·Dh) f32    gradient of the attention output
//   3 o       read       (B·T, H·Dh) f32    the forward's attention output
// Override constants: DH head dim (multiple of 4), RT threads per row (a power of two), WG
// threads per workgroup (a multiple of RT).
// Dispatch: G = ceil(rows / (WG/RT)) workgroups as (min(G, 65535), ceil(G / 65535)); workgroup
// index w = wg.y·65535 + wg.x handles rows w·(WG/RT) + lid / RT. The RT threads of a row stride
// over its DH/4 vec4 (coalesced), then the row's first thread adds their partials in a fixed
// order (deterministic).
// Saves nothing.

// #include "lib/grid_fold.wgsl"

override DH: u32 = 128u;
override RT: u32 = 8u;
override WG: u32 = 256u;

override DH4: u32 = DH / 4u;
override RPW: u32 = WG / RT;  // rows per workgroup

struct AttentionBackwardParams {
  batch: u32,
  tokens: u32,
  qHeads: u32,
  kvHeads: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: AttentionBackwardParams;
@group(0) @binding(1) var<storage, read_write> delta: array<f32>;
@group(0) @binding(2) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> o: array<vec4<f32>>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let rows = params.batch * params.tokens * params.qHeads;
  let row = (foldedWorkgroup(wg)) * RPW + lid / RT;
  let lane = lid % RT;
  var s = 0.0;
  if (row < rows) {
    for (var d4 = lane; d4 < DH4; d4 += RT) {
      s += dot(dO[row * DH4 + d4], o[row * DH4 + d4]);
    }
  }
  partial[lid] = s;
  workgroupBarrier();
  if (lane == 0u && row < rows) {
    var t = 0.0;
    for (var j = 0u; j < RT; j++) {
      t += partial[lid + j];
    }
    delta[row] = t;
  }
}
