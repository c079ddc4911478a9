// Cross-entropy over a chunk of Tc rows of logits, per row r:
//   lse[r]  = log Σ_v exp(logits[r, v])            (max-subtracted: m + log Σ exp(logits − m))
//   loss[r] = lse[r] − logits[r, targets[r]]        if targets[r] ∈ [0, V)
//           = 0                                     if targets[r] = −100 (ignored)
//           = NaN                                   otherwise (reads nothing; the caller validates)
//   correct[r] = 1 if argmax_v logits[r, v] = targets[r] (the lowest index among equal maxima, as
//                torch.argmax), else 0 (0 for ignored and invalid targets) — for token accuracy
// The caller shifts the targets (labels[t + 1]), sums loss and correct over chunks and divides by
// the count of valid targets.
//
// Bindings (group 0):
//   0 params   uniform    CrossEntropyParams { rows, vocab }   Tc, V
//   1 loss     read_write (Tc) f32     per-row loss
//   2 lse      read_write (Tc) f32     saved for backward (softmax = exp(logits − lse)); written for
//                                      ignored rows too
//   3 correct  read_write (Tc) f32     1.0 / 0.0
//   4 logits   read       (Tc, V) f32
//   5 targets  read       (Tc) i32
//
// Dispatch: grid (gx, gy) with gx·gy ≥ Tc; workgroup g = wg.y · gx + wg.x handles row g.
// The row is read once: each invocation keeps an online (running max m, Σ exp(x − m)) pair over
// chunks of 8·WG consecutive logits (8 coalesced loads in flight; the sum is rescaled only when the
// chunk's max exceeds m, and only then is the first index reaching the new max looked for), then a
// tail loop, then the WG triples (m, Σ, index of m) are merged by a tree in workgroup memory in a
// fixed order (deterministic; equal maxima keep the lower index).

override WG: u32 = 256u;

struct CrossEntropyParams {
  rows: u32,
  vocab: u32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyParams;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read_write> correct: array<f32>;
@group(0) @binding(4) var<storage, read> logits: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<i32>;

// Running maxima start here rather than at −∞ (WGSL may assume no infinities): exp(LOWEST − x)
// underflows to 0 for any logit, so an invocation that saw no element contributes (LOWEST, 0).
const LOWEST: f32 = -3.0e38;

var<workgroup> wmax: array<f32, WG>;
var<workgroup> wsum: array<f32, WG>;
var<workgroup> widx: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  // Uniform across the workgroup, so returning before the barriers is allowed.
  let row = wg.y * nwg.x + wg.x;
  if (row >= params.rows) {
    return;
  }
  let V = params.vocab;
  let base = row * V;
  var m = LOWEST;
  var s = 0.0;
  var bi = 0u; // index of this invocation's first logit equal to m

  // 1. Full chunks of 8·WG: eight coalesced loads, one rescale test, eight exps.
  let step = 8u * WG;
  let full = (V / step) * step;
  for (var j = lid; j < full; j += step) {
    let p = base + j;
    let x0 = logits[p];
    let x1 = logits[p + WG];
    let x2 = logits[p + 2u * WG];
    let x3 = logits[p + 3u * WG];
    let x4 = logits[p + 4u * WG];
    let x5 = logits[p + 5u * WG];
    let x6 = logits[p + 6u * WG];
    let x7 = logits[p + 7u * WG];
    let cm = max(max(max(x0, x1), max(x2, x3)), max(max(x4, x5), max(x6, x7)));
    if (cm > m) {
      s *= exp(m - cm);
      m = cm;
      // the first of the eight reaching cm (earlier chunks are all below it)
      bi = j + 7u * WG;
      if (x6 == cm) { bi = j + 6u * WG; }
      if (x5 == cm) { bi = j + 5u * WG; }
      if (x4 == cm) { bi = j + 4u * WG; }
      if (x3 == cm) { bi = j + 3u * WG; }
      if (x2 == cm) { bi = j + 2u * WG; }
      if (x1 == cm) { bi = j + WG; }
      if (x0 == cm) { bi = j; }
    }
    s += ((exp(x0 - m) + exp(x1 - m)) + (exp(x2 - m) + exp(x3 - m))) + ((exp(x4 - m) + exp(x5 - m)) + (exp(x6 - m) + exp(x7 - m)));
  }
  // 2. The tail (< 8·WG logits), one at a time.
  for (var j = full + lid; j < V; j += WG) {
    let x0 = logits[base + j];
    if (x0 > m) {
      s *= exp(m - x0);
      m = x0;
      bi = j;
    }
    s += exp(x0 - m);
  }
  wmax[lid] = m;
  wsum[lid] = s;
  widx[lid] = bi;
  workgroupBarrier();

  // 3. Merge (m_a, s_a, i_a), (m_b, s_b, i_b) → (M, s_a·e^(m_a − M) + s_b·e^(m_b − M), the index of
  //    the larger m, the lower index when equal), M = max(m_a, m_b).
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      let ma = wmax[lid];
      let mb = wmax[lid + h];
      let mm = max(ma, mb);
      wsum[lid] = wsum[lid] * exp(ma - mm) + wsum[lid + h] * exp(mb - mm);
      wmax[lid] = mm;
      let ia = widx[lid];
      let ib = widx[lid + h];
      widx[lid] = select(ia, ib, mb > ma || (mb == ma && ib < ia));
    }
    workgroupBarrier();
  }

  if (lid == 0u) {
    let l = wmax[0] + log(wsum[0]);
    lse[row] = l;
    let t = targets[row];
    var r = 0.0;
    var hit = 0.0;
    if (t >= 0 && u32(t) < V) {
      r = l - logits[base + u32(t)];
      hit = select(0.0, 1.0, widx[0] == u32(t));
    } else if (t != -100) {
      // A run-time bitcast: WGSL rejects NaN in a constant expression.
      let nanBits = 0x7fc00000u;
      r = bitcast<f32>(nanBits);
    }
    loss[row] = r;
    correct[row] = hit;
  }
}
