// LoRA down-projection of the projections that share one input, in one pass over it:
//   U_g (M, R) f32 = drop_g(X) (M, K) · A_gᵀ        g = 0 .. G−1, G ≤ 3 (q/k/v; gate/up; o or down alone)
// A_g is the (R, K) f32 lora_A weight of projection g. drop_g is LoRA dropout with projection g's
// salt (lib/dropout_hash.wgsl, the mask of dropout_forward.wgsl: element i = row·K + k kept when its
// hash ≥ threshold, kept ones scaled by `scale` = 1 / (1 − p)); threshold 0 turns it off.
// The G·R outputs of a row are the columns of one product: column c belongs to projection c / R,
// row c mod R of its A.
//
// Bindings (group 0):
//   0 params uniform    LoraDownParams { m, k, r, groups, threshold, scale, salt0, salt1, salt2 }
//   1 u0     read_write (M, R) f32 — U of projection 0
//   2 u1     read_write (M, R) f32 — U of projection 1 (G ≥ 2; else a stand-in, not touched)
//   3 u2     read_write (M, R) f32 — U of projection 2 (G = 3; else a stand-in, not touched)
//   4 x      read       (M, K) f32 — the shared input (before dropout)
//   5 a0     read       (R, K) f32 — lora_A of projection 0
//   6 a1     read       (R, K) f32 — lora_A of projection 1 (G ≥ 2; else any buffer, not read)
//   7 a2     read       (R, K) f32 — lora_A of projection 2 (G = 3; else any buffer, not read)
//   8 seed   read       (1) u32 — the micro-batch's dropout seed (read only when threshold > 0)
// Dispatch: (ceil(M / BM), ceil(G·R / BC)) workgroups of (32, 8) threads. With G·R ≤ BC (R ≤ 42 for
// q/k/v at BC = 128) every element of X is read from memory once. Saves nothing (U is the output).
//
// Tiling: each workgroup owns BM rows × BC columns and walks K in steps of BK. Per step it stages
// the X tile (BM × BK, k-major; without dropout one copy, with dropout one masked copy per
// projection, since each has its own mask) and the A tile (BC × BK, k-major) in workgroup memory.
// Thread (tx, ty) accumulates rows ty + 8·i (i < 4) and columns tx + 32·j (j < 4): neighbouring
// threads read neighbouring A columns, and the X value of a row is one broadcast read.

// the thread shape fixes BM = 8 · 4 rows and BC = 32 · 4 columns
const BM: u32 = 32u;
const BC: u32 = 128u;
const BK: u32 = 16u;
const THREADS: u32 = 256u;
const GROUPS: u32 = 3u;

struct LoraDownParams {
  m: u32,
  k: u32,
  r: u32,
  groups: u32,
  threshold: u32,
  scale: f32,
  salt0: u32,
  salt1: u32,
  salt2: u32,
}

@group(0) @binding(0) var<uniform> params: LoraDownParams;
@group(0) @binding(1) var<storage, read_write> u0: array<f32>;
@group(0) @binding(2) var<storage, read_write> u1: array<f32>;
@group(0) @binding(3) var<storage, read_write> u2: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> a0: array<f32>;
@group(0) @binding(6) var<storage, read> a1: array<f32>;
@group(0) @binding(7) var<storage, read> a2: array<f32>;
@group(0) @binding(8) var<storage, read> seed: array<u32>;

// [projection][k][row] (only projection 0 without dropout) and [k][column]
var<workgroup> xtile: array<f32, GROUPS * BK * BM>;
var<workgroup> atile: array<f32, BK * BC>;

// #include "lib/dropout_hash.wgsl"

fn loadA(g: u32, e: u32) -> f32 {
  if (g == 0u) {
    return a0[e];
  }
  if (g == 1u) {
    return a1[e];
  }
  return a2[e];
}

fn storeU(g: u32, e: u32, v: f32) {
  if (g == 0u) {
    u0[e] = v;
  } else if (g == 1u) {
    u1[e] = v;
  } else {
    u2[e] = v;
  }
}

@compute @workgroup_size(32, 8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let m0 = wg.x * BM;
  let c0 = wg.y * BC;
  let tx = li % 32u;
  let ty = li / 32u;
  let cols = params.groups * params.r;
  let dropping = params.threshold > 0u;
  var stream: array<u32, GROUPS>;
  if (dropping) {
    let s = seed[0];
    stream[0] = dropoutStream(s, params.salt0);
    stream[1] = dropoutStream(s, params.salt1);
    stream[2] = dropoutStream(s, params.salt2);
  }
  // the projection of each of this thread's columns: its masked X copy when dropping
  var gx: array<u32, 4>;
  for (var j = 0u; j < 4u; j++) {
    let c = c0 + tx + 32u * j;
    gx[j] = select(0u, min(c / params.r, GROUPS - 1u), dropping);
  }

  var acc: array<f32, 16>; // [row i][column j]
  let steps = (params.k + BK - 1u) / BK;
  for (var t = 0u; t < steps; t++) {
    let k0 = t * BK;
    for (var e = li; e < BM * BK; e += THREADS) {
      let row = e / BK;
      let kk = e % BK;
      let gr = m0 + row;
      let gk = k0 + kk;
      var v = 0.0;
      if (gr < params.m && gk < params.k) {
        v = x[gr * params.k + gk];
      }
      if (dropping) {
        for (var g = 0u; g < params.groups; g++) {
          let keep = dropoutKeep(stream[g], gr * params.k + gk, params.threshold);
          xtile[(g * BK + kk) * BM + row] = select(0.0, v * params.scale, keep);
        }
      } else {
        xtile[kk * BM + row] = v;
      }
    }
    for (var e = li; e < BC * BK; e += THREADS) {
      let col = e / BK;
      let kk = e % BK;
      let c = c0 + col;
      var v = 0.0;
      if (c < cols && k0 + kk < params.k) {
        v = loadA(c / params.r, (c % params.r) * params.k + k0 + kk);
      }
      atile[kk * BC + col] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var b: array<f32, 4>;
      for (var j = 0u; j < 4u; j++) {
        b[j] = atile[kk * BC + tx + 32u * j];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] += xtile[(gx[j] * BK + kk) * BM + ty + 8u * i] * b[j];
        }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let row = m0 + ty + 8u * i;
    for (var j = 0u; j < 4u; j++) {
      let c = c0 + tx + 32u * j;
      if (row < params.m && c < cols) {
        storeU(c / params.r, row * params.r + c % params.r, acc[i * 4u + j]);
      }
    }
  }
}
