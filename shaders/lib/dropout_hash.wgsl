// LoRA dropout's keep bit, one definition for every shader that applies the mask
// (dropout_forward, lora_down_forward, matmul_backward_input) and for dropoutRef in
// src/kernels/dropout.ts: element i (flattened index of the (N, K) LoRA input) of the micro-batch
// with seed `seed` in projection `salt` is kept when
//   pcg(dropoutStream(seed, salt) ^ i) ≥ threshold,   threshold = round(p · 2³²) clamped to 2³²−1,
// and a kept element is scaled by 1 / (1 − p). threshold 0 (p = 0) keeps everything.

// PCG-style integer hash (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// The hash stream of one (micro-batch, projection): computed once per thread.
fn dropoutStream(seed: u32, salt: u32) -> u32 {
  return pcg(pcg(seed) ^ salt);
}

fn dropoutKeep(stream: u32, i: u32, threshold: u32) -> bool {
  return pcg(stream ^ i) >= threshold;
}
