// Fused lm_head + cross-entropy forward for CPU adapters (Mesa lavapipe / llvmpipe), first pass:
// per vocabulary slice s and compact row r (a position that has a target), without ever storing the
// logits:
//   logit[r, v] = Σ_k x[p_r, k] · E[v, k]                        (p_r = rowPos[r], E the bf16 lm_head)
//   partial[s, r] = ( m  = max_v logit,                         over v in slice s
//                     Σ  = Σ_v exp(logit − m),
//                     tl = logit[r, target[p_r]] if the target falls in slice s, else LOWEST,
//                     bi = the lowest v with logit = m (torch.argmax's tie rule) )
// cross_entropy_fused_merge.wgsl combines the slices into loss, lse and "argmax = target" per position.
//
// Why this shape (llvmpipe runs 8 invocations as one 8-lane SIMD program, a subgroup):
//   - a storage-buffer load whose index is not a compile-time constant is a scalar loop over the 8
//     lanes (with a bounds check per lane and component), and so is a store: ~7 instructions per
//     lane and value, against 1 instruction for an 8-lane FMA;
//   - subgroupBroadcast with a constant lane is one extract + splat.
// So each lane owns 4 rows and keeps their x (4 × D ≤ 256 floats) in registers (the matrices X0..X15,
// column c of Xj = x[rows, 4j + c], loaded once); for each vocabulary row v the 8 lanes load E[v, :]
// together (lane j: bf16 elements 8j .. 8j+7, one vec4<u32>) and broadcast the pieces to every lane.
// Nothing is stored per logit. The code is unrolled by hand on purpose: an array indexed in a loop
// would be a per-lane gather on llvmpipe.
//
// Bindings (group 0):
//   0 params   uniform    CrossEntropyFusedParams { rows, vocab, hidden, slice }
//                         rows N (capacity of the compact list), vocab V, hidden D (D % 8 == 0, D ≤ 64),
//                         slice = vocabulary rows per slice (slice s covers [s·slice, min(V, (s+1)·slice)))
//   1 partial  read_write (S, N, 4) f32: m, Σ, tl, bi (bi as u32 bits)
//   2 x        read       (N, D) f32 — the final norm's output, by position
//   3 w        read       (V, D) bf16 as (V·D / 8) vec4<u32> (two bf16 a word, the even element low)
//   4 targets  read       (N) i32 — by position, in [0, V) for every listed position
//   5 rowPos   read       (N) i32 — position of compact row r, for r < count
//   6 count    read       (1) u32 — compact rows (positions with a target)
//
// Dispatch: (S, ceil(N / 32)) workgroups of 8 invocations (one subgroup of 8: the caller checks the
// adapter's subgroup size); invocation l of workgroup (s, g) owns compact rows g·32 + 4l + i, i < 4.
// Workgroups past the count return at once. Saves nothing (the merge writes lse).

enable subgroups;

struct CrossEntropyFusedParams {
  rows: u32,
  vocab: u32,
  hidden: u32,
  slice: u32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyFusedParams;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> targets: array<i32>;
@group(0) @binding(5) var<storage, read> rowPos: array<i32>;
@group(0) @binding(6) var<storage, read> count: array<u32>;

// Running maxima start here rather than at −∞ (WGSL may assume no infinities).
const LOWEST: f32 = -3.0e38;

var<workgroup> wcount: u32;

// bf16 elements 0..3 and 4..7 of a vec4<u32> of eight (the even element in the low half of a word).
fn bf16Lo(q: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u));
}
fn bf16Hi(q: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(q.z << 16u), bitcast<f32>(q.z & 0xffff0000u), bitcast<f32>(q.w << 16u), bitcast<f32>(q.w & 0xffff0000u));
}

// Columns k .. k+3 of the four rows at positions p (column c = x[p.*, k + c]); zeros when k ≥ D
// (D is a multiple of 8, so a quad is wholly inside or outside).
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
  // this lane's rows (clamped to the last listed row; only rows < n are written)
  let r = vec4<u32>(first + 4u * lane) + vec4<u32>(0u, 1u, 2u, 3u);
  let rc = min(r, vec4<u32>(n - 1u));
  let p = vec4<u32>(u32(rowPos[rc.x]), u32(rowPos[rc.y]), u32(rowPos[rc.z]), u32(rowPos[rc.w]));
  let t = vec4<i32>(targets[p.x], targets[p.y], targets[p.z], targets[p.w]);
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

  // vec4<u32>s of a vocabulary row; lanes past the row's end repeat its last one (times x = 0)
  let octets = params.hidden / 8u;
  let mine = min(lane, octets - 1u);
  let v0 = wg.x * params.slice;
  let v1 = min(v0 + params.slice, params.vocab);
  var m = vec4<f32>(LOWEST);
  var s = vec4<f32>(0.0);
  var tl = vec4<f32>(LOWEST);
  var bi = vec4<u32>(0u);
  for (var v = v0; v < v1; v++) {
    let q = w[v * octets + mine];
    var b = subgroupBroadcast(q, 0u);
    var a = X0 * bf16Lo(b) + X1 * bf16Hi(b);
    b = subgroupBroadcast(q, 1u);
    a += X2 * bf16Lo(b) + X3 * bf16Hi(b);
    b = subgroupBroadcast(q, 2u);
    a += X4 * bf16Lo(b) + X5 * bf16Hi(b);
    b = subgroupBroadcast(q, 3u);
    a += X6 * bf16Lo(b) + X7 * bf16Hi(b);
    b = subgroupBroadcast(q, 4u);
    a += X8 * bf16Lo(b) + X9 * bf16Hi(b);
    b = subgroupBroadcast(q, 5u);
    a += X10 * bf16Lo(b) + X11 * bf16Hi(b);
    b = subgroupBroadcast(q, 6u);
    a += X12 * bf16Lo(b) + X13 * bf16Hi(b);
    b = subgroupBroadcast(q, 7u);
    a += X14 * bf16Lo(b) + X15 * bf16Hi(b);
    // online log-sum-exp; a strictly larger logit moves the argmax (the lowest index wins ties)
    let better = a > m;
    let mm = max(m, a);
    s = s * exp(m - mm) + exp(a - mm);
    m = mm;
    bi = select(bi, vec4<u32>(v), better);
    tl = select(tl, a, t == vec4<i32>(i32(v)));
  }
  for (var i = 0u; i < 4u; i++) {
    if (r[i] < n) {
      let o = ((wg.x * params.rows) + r[i]) * 4u;
      partial[o] = m[i];
      partial[o + 1u] = s[i];
      partial[o + 2u] = tl[i];
      partial[o + 3u] = bitcast<f32>(bi[i]);
    }
  }
}
