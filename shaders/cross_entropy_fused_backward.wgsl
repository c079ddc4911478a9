// Fused lm_head + cross-entropy backward for CPU adapters (see cross_entropy_fused_forward.wgsl for
// why it is shaped this way). Per vocabulary slice s and compact row r (position p_r = rowPos[r],
// target t, lse saved by the merge pass), the logits recomputed and never stored:
//   1. logit[r, v] = Σ_k x[p_r, k] · E[v, k]
//   2. dlogit[r, v] = scale · (exp(logit − lse) − [v = t])          (softmax − one-hot)
//   3. dxPartial[s, r, k] = Σ_{v in slice s} dlogit[r, v] · E[v, k]  (the lm_head's input gradient)
// cross_entropy_fused_dx.wgsl adds the S slices and scatters the rows to their positions.
//
// Bindings (group 0):
//   0 params     uniform    CrossEntropyFusedBackwardParams { rows, vocab, hidden, slice, scale }
//   1 dxPartial  read_write (S, N, D) f32 — by compact row
//   2 x          read       (N, D) f32 — the final norm's output, by position
//   3 w          read       (V, D) bf16 as (V·D / 8) vec4<u32>
//   4 targets    read       (N) i32 — by position
//   5 rowPos     read       (N) i32 — position of compact row r, for r < count
//   6 count      read       (1) u32 — compact rows
//   7 lse        read       (N) f32 — by position, from cross_entropy_fused_merge.wgsl
//
// Dispatch: (S, ceil(N / 32)) workgroups of 8 invocations (one subgroup of 8); invocation l of
// workgroup (s, g) owns compact rows g·32 + 4l + i, i < 4. Saves nothing.

enable subgroups;

struct CrossEntropyFusedBackwardParams {
  rows: u32,
  vocab: u32,
  hidden: u32,
  slice: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyFusedBackwardParams;
@group(0) @binding(1) var<storage, read_write> dxPartial: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> targets: array<i32>;
@group(0) @binding(5) var<storage, read> rowPos: array<i32>;
@group(0) @binding(6) var<storage, read> count: array<u32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;

var<workgroup> wcount: u32;

fn bf16Lo(q: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u));
}
fn bf16Hi(q: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(q.z << 16u), bitcast<f32>(q.z & 0xffff0000u), bitcast<f32>(q.w << 16u), bitcast<f32>(q.w & 0xffff0000u));
}

fn xQuad(p: vec4<u32>, k: u32) -> mat4x4<f32> {
  let D = params.hidden;
  if (k >= D) {
    return mat4x4<f32>();
  }
  let a = p * D + vec4<u32>(k);
  return mat4x4<f32>(
    vec4<f32>(x[a.x], x[a.y], x[a.z], x[a.w]),
    vec4<f32>(x[a.x + 1u], x[a.y + 1u], x[a.z + 1u], x[a.w + 1u]),
    vec4<f32>(x[a.x + 2u], x[a.y + 2u], x[a.z + 2u], x[a.w + 2u]),
    vec4<f32>(x[a.x + 3u], x[a.y + 3u], x[a.z + 3u], x[a.w + 3u]),
  );
}

// g ⊗ e: column c = g · e[c] (rows × four consecutive k)
fn outer(g: vec4<f32>, e: vec4<f32>) -> mat4x4<f32> {
  return mat4x4<f32>(g * e.x, g * e.y, g * e.z, g * e.w);
}

// Writes column quad k .. k+3 of the lane's row i (when k < D) at dxPartial[o + k ..].
fn storeQuad(o: u32, k: u32, d: mat4x4<f32>, i: u32) {
  if (k < params.hidden) {
    dxPartial[o + k] = d[0][i];
    dxPartial[o + k + 1u] = d[1][i];
    dxPartial[o + k + 2u] = d[2][i];
    dxPartial[o + k + 3u] = d[3][i];
  }
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  if (lane == 0u) {
    wcount = count[0];
  }
  let n = workgroupUniformLoad(&wcount);
  let first = wg.y * 32u;
  if (first >= n) {
    return;
  }
  let r = vec4<u32>(first + 4u * lane) + vec4<u32>(0u, 1u, 2u, 3u);
  let rc = min(r, vec4<u32>(n - 1u));
  let p = vec4<u32>(u32(rowPos[rc.x]), u32(rowPos[rc.y]), u32(rowPos[rc.z]), u32(rowPos[rc.w]));
  let t = vec4<i32>(targets[p.x], targets[p.y], targets[p.z], targets[p.w]);
  let l = vec4<f32>(lse[p.x], lse[p.y], lse[p.z], lse[p.w]);
  let X0 = xQuad(p, 0u);
  let X1 = xQuad(p, 4u);
  let X2 = xQuad(p, 8u);
  let X3 = xQuad(p, 12u);
  let X4 = xQuad(p, 16u);
  let X5 = xQuad(p, 20u);
  let X6 = xQuad(p, 24u);
  let X7 = xQuad(p, 28u);
  let X8 = xQuad(p, 32u);
  let X9 = xQuad(p, 36u);
  let X10 = xQuad(p, 40u);
  let X11 = xQuad(p, 44u);
  let X12 = xQuad(p, 48u);
  let X13 = xQuad(p, 52u);
  let X14 = xQuad(p, 56u);
  let X15 = xQuad(p, 60u);
  var D0 = mat4x4<f32>();
  var D1 = mat4x4<f32>();
  var D2 = mat4x4<f32>();
  var D3 = mat4x4<f32>();
  var D4 = mat4x4<f32>();
  var D5 = mat4x4<f32>();
  var D6 = mat4x4<f32>();
  var D7 = mat4x4<f32>();
  var D8 = mat4x4<f32>();
  var D9 = mat4x4<f32>();
  var D10 = mat4x4<f32>();
  var D11 = mat4x4<f32>();
  var D12 = mat4x4<f32>();
  var D13 = mat4x4<f32>();
  var D14 = mat4x4<f32>();
  var D15 = mat4x4<f32>();

  let octets = params.hidden / 8u;
  let mine = min(lane, octets - 1u);
  let v0 = wg.x * params.slice;
  let v1 = min(v0 + params.slice, params.vocab);
  for (var v = v0; v < v1; v++) {
    let q = w[v * octets + mine];
    // E[v, 8j .. 8j+7] as two quads, from lane j
    let e0 = bf16Lo(subgroupBroadcast(q, 0u));
    let e1 = bf16Hi(subgroupBroadcast(q, 0u));
    let e2 = bf16Lo(subgroupBroadcast(q, 1u));
    let e3 = bf16Hi(subgroupBroadcast(q, 1u));
    let e4 = bf16Lo(subgroupBroadcast(q, 2u));
    let e5 = bf16Hi(subgroupBroadcast(q, 2u));
    let e6 = bf16Lo(subgroupBroadcast(q, 3u));
    let e7 = bf16Hi(subgroupBroadcast(q, 3u));
    let e8 = bf16Lo(subgroupBroadcast(q, 4u));
    let e9 = bf16Hi(subgroupBroadcast(q, 4u));
    let e10 = bf16Lo(subgroupBroadcast(q, 5u));
    let e11 = bf16Hi(subgroupBroadcast(q, 5u));
    let e12 = bf16Lo(subgroupBroadcast(q, 6u));
    let e13 = bf16Hi(subgroupBroadcast(q, 6u));
    let e14 = bf16Lo(subgroupBroadcast(q, 7u));
    let e15 = bf16Hi(subgroupBroadcast(q, 7u));
    // 1.
    let a = X0 * e0 + X1 * e1 + X2 * e2 + X3 * e3 + X4 * e4 + X5 * e5 + X6 * e6 + X7 * e7
          + X8 * e8 + X9 * e9 + X10 * e10 + X11 * e11 + X12 * e12 + X13 * e13 + X14 * e14 + X15 * e15;
    // 2.
    let g = params.scale * (exp(a - l) - select(vec4<f32>(0.0), vec4<f32>(1.0), t == vec4<i32>(i32(v))));
    // 3.
    D0 += outer(g, e0);
    D1 += outer(g, e1);
    D2 += outer(g, e2);
    D3 += outer(g, e3);
    D4 += outer(g, e4);
    D5 += outer(g, e5);
    D6 += outer(g, e6);
    D7 += outer(g, e7);
    D8 += outer(g, e8);
    D9 += outer(g, e9);
    D10 += outer(g, e10);
    D11 += outer(g, e11);
    D12 += outer(g, e12);
    D13 += outer(g, e13);
    D14 += outer(g, e14);
    D15 += outer(g, e15);
  }
  for (var i = 0u; i < 4u; i++) {
    if (r[i] < n) {
      let o = (wg.x * params.rows + r[i]) * params.hidden;
      storeQuad(o, 0u, D0, i);
      storeQuad(o, 4u, D1, i);
      storeQuad(o, 8u, D2, i);
      storeQuad(o, 12u, D3, i);
      storeQuad(o, 16u, D4, i);
      storeQuad(o, 20u, D5, i);
      storeQuad(o, 24u, D6, i);
      storeQuad(o, 28u, D7, i);
      storeQuad(o, 32u, D8, i);
      storeQuad(o, 36u, D9, i);
      storeQuad(o, 40u, D10, i);
      storeQuad(o, 44u, D11, i);
      storeQuad(o, 48u, D12, i);
      storeQuad(o, 52u, D13, i);
      storeQuad(o, 56u, D14, i);
      storeQuad(o, 60u, D15, i);
    }
  }
}
