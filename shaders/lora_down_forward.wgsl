// LoRA down-projection of the projections that share one input, in one pass over it:
//   U_g (M, R) f32 = drop_g(X) (M, K) · A_gᵀ        g = 0 .. G−1, G ≤ 3 (q/k/v; gate/up; o or down alone)
// A_g is the (R, K) f32 lora_A weight of projection g. drop_g is LoRA dropout with projection g's
// salt (lib/dropout_hash.wgsl, the mask of dropout_forward.wgsl: element i = row·K + k kept when its
// hash ≥ threshold, kept ones scaled by `scale` = 1 / (1 − p)); threshold 0 turns it off.
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
// Dispatch: (ceil(M / BM), G · ceil(R / BC)) workgroups of 256 threads; workgroup (x, y) owns rows
// BM·x .. BM·x + BM − 1 and columns BC·(y mod nb) .. + BC − 1 of projection y / nb, nb = ceil(R / BC).
// One projection per workgroup keeps the dropout mask and the A and U bindings uniform; X is read
// once per projection (the G reads of a row block run close together, mostly from L2). Any K ≥ 1.
// Saves nothing (U is the output).
//
// Tiling (no workgroup staging in the K loop; K is split inside the workgroup): thread li is lane
// s = li mod 32 of warp w = li / 32, column group cg = w mod CG, row group rg = w / CG. It owns the
// TM × TN outputs rows rg·TM + i, columns cg·TN + j of the block and the K slice k ≡ s (mod 32):
// per step of KSTEP = 32 · KU it reads x[row, k] and A[col, k] for k = k0 + s + 32·t (t < KU), so
// a warp's reads of one row of X or A are 128 contiguous bytes, and it accumulates in registers. At
// the end the 32 slices' partial sums of each output are added in workgroup memory (in lane order)
// and written to U. Warps whose columns all lie past R skip the K loop.

const TM: u32 = 4u; // rows per thread
const TN: u32 = 8u; // columns per thread
const KU: u32 = 4u; // k per lane per step
const LANES: u32 = 32u; // K slices
const CG: u32 = 4u; // column groups (warps across columns)
const RG: u32 = 2u; // row groups (warps across rows)
const BM: u32 = TM * RG; // 8 rows per workgroup
const BC: u32 = TN * CG; // 32 columns per workgroup
const KSTEP: u32 = LANES * KU;
const PAD: u32 = LANES + 1u; // partial sums of one output, padded against bank conflicts

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

// one row i of every thread's tile per round: [warp][column j][lane], lanes padded
var<workgroup> partial: array<f32, RG * CG * TN * PAD>;

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

fn saltOf(g: u32) -> u32 {
  if (g == 0u) {
    return params.salt0;
  }
  if (g == 1u) {
    return params.salt1;
  }
  return params.salt2;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let K = params.k;
  let R = params.r;
  let nb = (R + BC - 1u) / BC;
  let g = wg.y / nb; // this workgroup's projection
  let c0 = (wg.y % nb) * BC;
  let m0 = wg.x * BM;
  let s = li % LANES;
  let w = li / LANES;
  let cg = w % CG;
  let rg = w / CG;
  let rowBase = m0 + rg * TM;
  let colBase = c0 + cg * TN; // column of A_g / U_g
  let dropping = params.threshold > 0u;
  var stream = 0u;
  if (dropping) {
    stream = dropoutStream(seed[0], saltOf(g));
  }

  var acc: array<f32, TM * TN>; // [row i][column j]
  if (colBase < R) {
    for (var k0 = 0u; k0 < K; k0 += KSTEP) {
      var xv: array<f32, TM * KU>; // [row i][t]
      var av: array<f32, TN * KU>; // [column j][t]
      for (var t = 0u; t < KU; t++) {
        let kk = k0 + s + LANES * t;
        for (var i = 0u; i < TM; i++) {
          let row = rowBase + i;
          var v = 0.0;
          if (row < params.m && kk < K) {
            v = x[row * K + kk];
            if (dropping) {
              v = select(0.0, v * params.scale, dropoutKeep(stream, row * K + kk, params.threshold));
            }
          }
          xv[i * KU + t] = v;
        }
        for (var j = 0u; j < TN; j++) {
          let c = colBase + j;
          var v = 0.0;
          if (c < R && kk < K) {
            v = loadA(g, c * K + kk);
          }
          av[j * KU + t] = v;
        }
      }
      for (var t = 0u; t < KU; t++) {
        for (var i = 0u; i < TM; i++) {
          for (var j = 0u; j < TN; j++) {
            acc[i * TN + j] += xv[i * KU + t] * av[j * KU + t];
          }
        }
      }
    }
  }

  // add the 32 slices' partial sums: round i takes row i of every thread's tile; thread o < 64
  // sums output o = (warp, column j) over the lanes in order and writes it
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      partial[(w * TN + j) * PAD + s] = acc[i * TN + j];
    }
    workgroupBarrier();
    if (li < RG * CG * TN) {
      let ow = li / TN;
      let oj = li % TN;
      var sum = 0.0;
      for (var l = 0u; l < LANES; l++) {
        sum += partial[li * PAD + l];
      }
      let row = m0 + (ow / CG) * TM + i;
      let c = c0 + (ow % CG) * TN + oj;
      if (row < params.m && c < R) {
        storeU(g, row * R + c, sum);
      }
    }
    workgroupBarrier();
  }
}
