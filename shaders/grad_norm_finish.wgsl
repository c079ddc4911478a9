// Global gradient norm, stage 2 of 2: adds the stage-1 partials and writes the clipping state that
// the optimiser kernels read, as torch.nn.utils.clip_grad_norm_ computes it:
//   totalNorm = √(Σ_w partials[w].sumSq)                       (‖gradScale · grads‖₂ over finite elements)
//   clipCoef  = min(maxNorm / (totalNorm + 1e-6), 1)           when clip ≠ 0, else 1
//   nonFinite = Σ_w partials[w].nonFinite; when > 0, clipCoef = 0 and skippedSteps += 1 (the
//               optimiser kernels skip the whole update of such a step)
//
// Bindings (group 0):
//   0 params    uniform    GradNormFinishParams { partialCount, maxNorm, clip }
//   1 state     read_write GradNormState { totalNorm f32, clipCoef f32, nonFinite u32, skippedSteps u32 }
//   2 partials  read       (partialCount) GradNormPartial { sumSq f32, nonFinite u32 }
//
// Dispatch: exactly one workgroup of WG invocations. Invocation t adds partials t, t + WG, … in
// order, then a tree in workgroup memory adds the WG sums: the order depends only on partialCount,
// so the result is the same bits on every run.
// Saves nothing. The CPU reads `state` only at logging steps.

override WG: u32 = 256u;

struct GradNormFinishParams {
  partialCount: u32,
  maxNorm: f32,
  clip: u32,
}

struct GradNormPartial {
  sumSq: f32,
  nonFinite: u32,
}

struct GradNormState {
  totalNorm: f32,
  clipCoef: f32,
  nonFinite: u32,
  skippedSteps: u32,
}

@group(0) @binding(0) var<uniform> params: GradNormFinishParams;
@group(0) @binding(1) var<storage, read_write> state: GradNormState;
@group(0) @binding(2) var<storage, read> partials: array<GradNormPartial>;

var<workgroup> sums: array<f32, WG>;
var<workgroup> bad: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  var c = 0u;
  for (var j = lid; j < params.partialCount; j += WG) {
    let p = partials[j];
    s += p.sumSq;
    c += p.nonFinite;
  }
  sums[lid] = s;
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
    let total = sqrt(sums[0]);
    let count = bad[0];
    var coef = 1.0;
    if (params.clip != 0u) {
      coef = min(params.maxNorm / (total + 1e-6), 1.0);
    }
    state.totalNorm = total;
    state.clipCoef = select(coef, 0.0, count > 0u);
    state.nonFinite = count;
    state.skippedSteps += select(0u, 1u, count > 0u);
  }
}
