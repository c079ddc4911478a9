// Global gradient norm, stage 1 of 2: partial sums of squares of the scaled gradients, one per
// workgroup, and counts of non-finite gradient elements.
//   partials[partialBase + w] = { sumSq: Σ_j (gradScale · grads[j])², nonFinite: #{ j : grads[j] is ±inf or NaN } }
// over the elements j visited by workgroup w. Non-finite elements are counted and left out of the sum.
// An element is non-finite when its exponent bits are all ones, tested on the bits (WGSL lets a
// compiler assume that float arithmetic never sees inf or NaN, so `x != x` is not a safe test).
//
// Bindings (group 0):
//   0 params    uniform    GradNormPartialParams { count, partialBase, gradScale }
//   1 partials  read_write (P) GradNormPartial { sumSq f32, nonFinite u32 }; this dispatch writes
//                          entries partialBase … partialBase + G − 1
//   2 grads     read       (count) f32 — a flat gradient buffer (e.g. a ParamArena's) or a chunk of it
//
// Dispatch: G workgroups of WG invocations (G chosen from count alone). Invocation t of workgroup w
// visits j = w·WG + t + k·G·WG, k = 0, 1, … (grid-stride: each load instruction of a subgroup reads
// consecutive words), keeping four running sums for four loads in flight; the WG partials are then
// added by a tree in workgroup memory. The order of additions depends only on count and G, so two
// runs give identical bits (no atomics).
// Saves nothing.

override WG: u32 = 256u;

struct GradNormPartialParams {
  count: u32,
  partialBase: u32,
  gradScale: f32,
}

struct GradNormPartial {
  sumSq: f32,
  nonFinite: u32,
}

@group(0) @binding(0) var<uniform> params: GradNormPartialParams;
@group(0) @binding(1) var<storage, read_write> partials: array<GradNormPartial>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;

var<workgroup> sums: array<f32, WG>;
var<workgroup> bad: array<u32, WG>;

const EXP_MASK: u32 = 0x7f800000u;

// (gradScale·x)² for a finite x, 0 for ±inf / NaN.
fn square(x: f32) -> f32 {
  let y = select(0.0, x * params.gradScale, (bitcast<u32>(x) & EXP_MASK) != EXP_MASK);
  return y * y;
}

fn nonFinite(x: f32) -> u32 {
  return select(0u, 1u, (bitcast<u32>(x) & EXP_MASK) == EXP_MASK);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = params.count;
  let stride = ng.x * WG;
  var a0 = 0.0;
  var a1 = 0.0;
  var a2 = 0.0;
  var a3 = 0.0;
  var c = 0u;
  var j = wg.x * WG + lid;
  // Four strided loads per trip while all four are in range, then the tail one at a time.
  loop {
    if (j + 3u * stride >= n) {
      break;
    }
    let x0 = grads[j];
    let x1 = grads[j + stride];
    let x2 = grads[j + 2u * stride];
    let x3 = grads[j + 3u * stride];
    a0 += square(x0);
    a1 += square(x1);
    a2 += square(x2);
    a3 += square(x3);
    c += nonFinite(x0) + nonFinite(x1) + nonFinite(x2) + nonFinite(x3);
    j += 4u * stride;
  }
  for (; j < n; j += stride) {
    let x = grads[j];
    a0 += square(x);
    c += nonFinite(x);
  }
  sums[lid] = (a0 + a1) + (a2 + a3);
  bad[lid] = c;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      sums[lid] += sums[lid + h];
      bad[lid] += bad[lid + h];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    partials[params.partialBase + wg.x] = GradNormPartial(sums[0], bad[0]);
  }
}
