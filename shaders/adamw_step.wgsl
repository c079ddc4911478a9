// AdamW step, one element per invocation, over a flat f32 parameter buffer (e.g. a ParamArena).
// With g = (grad · gradScale) · clipCoef (the gradient as torch's clip_grad_norm_ leaves it):
//   1. p ← p · decayPre                              torch: param.mul_(1 − lr·wd)
//   2. m ← m + w·(g − m)           (w = 1 − β1 < ½)  torch: exp_avg.lerp_(grad, 1 − β1)
//      m ← g − (g − m)·(1 − w)     (w ≥ ½)           (LERP = false: m·β1 + (1 − β1)·g, bitsandbytes)
//   3. v ← v·β2 + ((1 − β2)·g)·g                     torch: exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
//   4. d ← √v / denomDiv + epsTerm                   torch: (exp_avg_sq.sqrt() / √bc2).add_(eps)
//   5. p ← p + stepScale · (m / d)                   torch: param.addcdiv_(exp_avg, d, value=−lr/bc1)
//   6. p ← p · decayPost
// The host computes the step's scalars in float64 (as torch does in Python) and rounds them to f32:
//   torch.optim.AdamW:       decayPre = 1 − lr·wd, denomDiv = √(1 − β2^t), epsTerm = eps,
//                            stepScale = −lr / (1 − β1^t), decayPost = 1
//   bitsandbytes 32-bit:     decayPre = 1, denomDiv = 1, epsTerm = eps·√(1 − β2^t),
//                            stepScale = −lr·√(1 − β2^t) / (1 − β1^t), decayPost = 1 − lr·wd
// (multiplying or dividing by exactly 1 is exact, so one formula serves both orders).
// When gradNorm.nonFinite ≠ 0 the whole step is skipped: nothing is written.
//
// Bindings (group 0):
//   0 params    uniform    AdamwParams { count, gradScale, decayPre, beta1, oneMinusBeta1, beta2,
//                                        oneMinusBeta2, denomDiv, epsTerm, stepScale, decayPost }
//   1 param     read_write (count) f32 — parameters, updated in place
//   2 m         read_write (count) f32 — first moment (exp_avg)
//   3 v         read_write (count) f32 — second moment (exp_avg_sq)
//   4 grad      read       (count) f32 — gradients
//   5 gradNorm  read       GradNormState { totalNorm, clipCoef, nonFinite, skippedSteps } from grad_norm_finish.wgsl
// Dispatch: (min(ceil(count / WG), 65535), ceil(count / (65535·WG))) workgroups of WG invocations;
// element i = (wg.y · 65535 + wg.x) · WG + local.x. Memory-bound: 16 bytes read, 12 written per element,
// every access coalesced.
// Saves nothing.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;
// true: torch's lerp form of the first-moment update; false: bitsandbytes' m·β1 + (1 − β1)·g.
override LERP: bool = true;

struct AdamwParams {
  count: u32,
  gradScale: f32,
  decayPre: f32,
  beta1: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  denomDiv: f32,
  epsTerm: f32,
  stepScale: f32,
  decayPost: f32,
}

struct GradNormState {
  totalNorm: f32,
  clipCoef: f32,
  nonFinite: u32,
  skippedSteps: u32,
}

@group(0) @binding(0) var<uniform> params: AdamwParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grad: array<f32>;
@group(0) @binding(5) var<storage, read> gradNorm: GradNormState;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (foldedWorkgroup(wg)) * WG + lid.x;
  if (i >= params.count || gradNorm.nonFinite != 0u) {
    return;
  }
  let g = (grad[i] * params.gradScale) * gradNorm.clipCoef;
  let p0 = param[i] * params.decayPre;
  var m1: f32;
  let w = params.oneMinusBeta1;
  if (LERP) {
    if (w < 0.5) {
      m1 = m[i] + w * (g - m[i]);
    } else {
      m1 = g - (g - m[i]) * (1.0 - w);
    }
  } else {
    m1 = m[i] * params.beta1 + w * g;
  }
  let v1 = v[i] * params.beta2 + (params.oneMinusBeta2 * g) * g;
  let d = sqrt(v1) / params.denomDiv + params.epsTerm;
  param[i] = (p0 + params.stepScale * (m1 / d)) * params.decayPost;
  m[i] = m1;
  v[i] = v1;
}
