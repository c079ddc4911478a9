// Cross-entropy backward over a chunk of Tc rows of logits, in place: the logits are overwritten with
// their gradient. Forward, per row r with target t = targets[r]: loss_r = lse_r − logits[r, t].
// Derivation, with the chunk's part of the loss L = c · Σ_r loss_r (c = the scale below):
//   1. ∂lse_r/∂logits[r, v] = exp(logits[r, v] − lse_r) = softmax_v     (lse is the forward's, saved)
//   2. ∂loss_r/∂logits[r, v] = softmax_v − [v = t]
//   3. dlogits[r, v] = c · (exp(logits[r, v] − lse_r) − [v = t])        if t ∈ [0, V)
//                    = 0                                                 if t = −100 (ignored row)
//                    = NaN                                               otherwise (the forward's loss is NaN too)
// c = params.scale · gradScale[0]: a number fixed when the dispatch is bound times a value read from
// a GPU buffer, so a scale that changes per step (1 / target tokens of all micro-batches) is written
// into the (1) buffer, or computed there by an earlier kernel, without rebinding or a CPU round trip.
// The hidden-state gradient dlogits·E is a separate matmul.
//
// Bindings (group 0):
//   0 params     uniform    CrossEntropyBackwardParams { rows, vocab, scale }   Tc, V, constant factor
//   1 logits     read_write (Tc, V) f32   in: logits; out: dlogits (each element read, then written)
//   2 gradScale  read       (1) f32       factor read on the GPU (1.0 when only params.scale is used)
//   3 targets    read       (Tc) i32      target ids, −100 to skip a row
//   4 lse        read       (Tc) f32      saved by the forward pass: log Σ_v exp(logits[r, v])
//
// Dispatch: grid (ceil(V / (WG·ELEMS)), gy, gz) with gy·gz ≥ Tc; workgroup (wg.x, wg.y, wg.z) handles
// the slice of WG·ELEMS consecutive logits starting at wg.x·WG·ELEMS of row r = wg.z·gy + wg.y.
// Invocation l touches columns slice + k·WG + l for k < ELEMS: coalesced, one exp each. Many slices
// per row keep the GPU busy even for a short chunk (V = 151936: 38 workgroups per row with ELEMS = 16).
// Saves nothing.

override WG: u32 = 256u;
override ELEMS: u32 = 16u;

struct CrossEntropyBackwardParams {
  rows: u32,
  vocab: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: CrossEntropyBackwardParams;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> gradScale: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<i32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wg.z * nwg.y + wg.y;
  if (row >= params.rows) {
    return;
  }
  let V = params.vocab;
  let base = row * V;
  let start = wg.x * WG * ELEMS + lid;
  let t = targets[row];

  if (t == -100) {
    // 3, ignored row.
    for (var k = 0u; k < ELEMS; k++) {
      let j = start + k * WG;
      if (j < V) {
        logits[base + j] = 0.0;
      }
    }
    return;
  }
  if (t < 0 || u32(t) >= V) {
    // 3, invalid target: NaN, as the forward's loss. A run-time bitcast: WGSL rejects a NaN constant.
    let nanBits = 0x7fc00000u;
    let nan = bitcast<f32>(nanBits);
    for (var k = 0u; k < ELEMS; k++) {
      let j = start + k * WG;
      if (j < V) {
        logits[base + j] = nan;
      }
    }
    return;
  }

  let c = params.scale * gradScale[0];
  let l = lse[row];
  let hit = u32(t);
  for (var k = 0u; k < ELEMS; k++) {
    let j = start + k * WG;
    if (j < V) {
      // 1–3: c · (softmax − one-hot)
      let p = exp(logits[base + j] - l);
      logits[base + j] = c * select(p, p - 1.0, j == hit);
    }
  }
}
