// Fused lm_head + cross-entropy forward, second pass: per position p, the S vocabulary slices of
// cross_entropy_fused_forward.wgsl combined (compact row r = rowOf[p]):
//   M    = max_s m_s
//   lse  = M + log Σ_s Σ_s·exp(m_s − M)
//   loss = lse − tl,  tl = max_s tl_s (exactly one slice holds the target's logit)
//   correct = 1 if argmax = target else 0, argmax = bi of the first slice reaching M (slices run in
//             vocabulary order, so the lowest index wins ties as torch.argmax)
// Positions without a target (rowOf[p] < 0) get loss 0, lse 0, correct 0.
//
// Bindings (group 0):
//   0 params   uniform    CrossEntropyFusedMergeParams { rows, slices }   N positions, S slices
//   1 loss     read_write (N) f32 — by position
//   2 lse      read_write (N) f32 — by position, saved for cross_entropy_fused_backward.wgsl
//   3 correct  read_write (N) f32 — 1.0 / 0.0 by position
//   4 partial  read       (S, N, 4) f32 — m, Σ, tl, bi (u32 bits), by compact row
//   5 targets  read       (N) i32 — by position
//   6 rowOf    read       (N) i32 — compact row of each position, −1 for none
//
// Dispatch: ceil(N / WG) workgroups of WG; one invocation per position. Saves lse.

override WG: u32 = 64u;

struct CrossEntropyFusedMergeParams {
  rows: u32,
  slices: u32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyFusedMergeParams;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> correct: array<f32>;
@group(0) @binding(4) var<storage, read> partial: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<i32>;
@group(0) @binding(6) var<storage, read> rowOf: array<i32>;

const LOWEST: f32 = -3.0e38;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let p = gid.x;
  if (p >= params.rows) {
    return;
  }
  let r = rowOf[p];
  if (r < 0) {
    loss[p] = 0.0;
    lse[p] = 0.0;
    correct[p] = 0.0;
    return;
  }
  var top = LOWEST;
  for (var s = 0u; s < params.slices; s++) {
    top = max(top, partial[(s * params.rows + u32(r)) * 4u]);
  }
  var sum = 0.0;
  var tl = LOWEST;
  var best = LOWEST;
  var bi = 0u;
  for (var s = 0u; s < params.slices; s++) {
    let o = (s * params.rows + u32(r)) * 4u;
    let m = partial[o];
    sum += partial[o + 1u] * exp(m - top);
    tl = max(tl, partial[o + 2u]);
    if (m > best) {
      best = m;
      bi = bitcast<u32>(partial[o + 3u]);
    }
  }
  let l = top + log(sum);
  lse[p] = l;
  loss[p] = l - tl;
  correct[p] = select(0.0, 1.0, i32(bi) == targets[p]);
}
