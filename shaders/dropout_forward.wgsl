// LoRA dropout (inverted): out[i] (=|+=) x[i] · keep(i) / (1 − p), keep(i) = hash(seed, salt, i) ≥ p·2³².
// The mask is never stored: the same (seed, salt, i) gives the same keep bit, so the backward pass
// regenerates it (the dropped LoRA input for dA, and the mask applied to dU·A on its way into dX).
// seed changes every micro-batch (read from a one-word buffer, written once per micro-batch);
// salt tells the LoRA layers apart (layer · 8 + projection).
//
// Bindings (group 0):
//   0 params  uniform    DropoutParams { count, threshold, scale, salt }
//                        threshold = round(p · 2³²) clamped to 2³²−1, scale = 1 / (1 − p)
//   1 out     read_write (N, K) f32  — written, or added into with ACCUMULATE
//   2 x       read       (N, K) f32
//   3 seed    read       (1) u32
// Dispatch: (min(ceil(count / WG), 65535), ceil(count / (65535·WG))) workgroups of WG threads.
// Saves nothing.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;
override ACCUMULATE: bool = false;

struct DropoutParams {
  count: u32,
  threshold: u32,
  scale: f32,
  salt: u32,
}

@group(0) @binding(0) var<uniform> params: DropoutParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> seed: array<u32>;

// #include "lib/dropout_hash.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (foldedWorkgroup(wg)) * WG + lid.x;
  if (i >= params.count) {
    return;
  }
  var v = 0.0;
  if (dropoutKeep(dropoutStream(seed[0], params.salt), i, params.threshold)) {
    v = x[i] * params.scale;
  }
  if (ACCUMULATE) {
    out[i] = out[i] + v;
  } else {
    out[i] = v;
  }
}
