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
//   4 x      read       (M, K) f32 — the shared input (before dropout), read as vec4 (K % 4 == 0)
//   5 a0     read       (R, K) f32 — lora_A of projection 0, as vec4
//   6 a1     read       (R, K) f32 — lora_A of projection 1 (G ≥ 2; else any buffer, not read)
//   7 a2     read       (R, K) f32 — lora_A of projection 2 (G = 3; else any buffer, not read)
//   8 seed   read       (1) u32 — the micro-batch's dropout seed (read only when threshold > 0)
// Dispatch: (ceil(M / BM), G · ceil(R / BC)) workgroups of 256 threads; workgroup (x, y) owns rows
// BM·x .. BM·x + BM − 1 and columns BC·(y mod nb) .. + BC − 1 of projection y / nb, nb = ceil(R / BC).
// One projection per workgroup keeps the dropout mask and the A and U bindings uniform; X is read
// once per projection (the G reads of a row block run close together, mostly from L2). K must be a
// multiple of 4 (every Qwen3 width is; src/kernels/lora-down.ts sends other widths elsewhere).
// Saves nothing (U is the output).
//
// Tiling (no workgroup staging in the K loop; K is split inside the workgroup): thread li is lane
// s = li mod 32 of warp w = li / 32, column group cg = w mod CG, row group rg = w / CG. It owns the
// TM × TN outputs rows rg·TM + i, columns cg·TN + j of the block and the K slice of the vec4s
// k4 ≡ s (mod 32): per step it reads x[row, 4·k4 ..] for its 4 rows and A[col, 4·k4 ..] for its 8
// columns, one vec4 each (12 loads for 128 FMAs; one element a load ran 12 for 32), so a warp's
// reads of one row of X or A are 512 contiguous bytes, and it accumulates in 8 named vec4
// registers (one per column, the rows as components). At the end the 32 slices' partial sums of
// each output are added in workgroup memory (in lane order) and written to U. Warps whose columns all lie past R skip the K loop.

const TM: u32 = 4u; // rows per thread
const TN: u32 = 8u; // columns per thread
const LANES: u32 = 32u; // K slices
const CG: u32 = 4u; // column groups (warps across columns)
const RG: u32 = 2u; // row groups (warps across rows)
const BM: u32 = TM * RG; // 8 rows per workgroup
const BC: u32 = TN * CG; // 32 columns per workgroup
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
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> a0: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> a1: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> a2: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> seed: array<u32>;

// one row i of every thread's tile per round: [warp][column j][lane], lanes padded
var<workgroup> partial: array<f32, RG * CG * TN * PAD>;

// #include "lib/dropout_hash.wgsl"

fn loadA(g: u32, e: u32) -> vec4<f32> {
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

// Four consecutive elements of X from flattened index i, LoRA dropout applied (scaled or zeroed).
fn dropped(v: vec4<f32>, stream: u32, i: u32) -> vec4<f32> {
  let keep = vec4<bool>(
    dropoutKeep(stream, i, params.threshold),
    dropoutKeep(stream, i + 1u, params.threshold),
    dropoutKeep(stream, i + 2u, params.threshold),
    dropoutKeep(stream, i + 3u, params.threshold));
  return select(vec4<f32>(0.0), v * params.scale, keep);
}

// The partial dot products of four rows' k-slices with one column's: one accumulator's update.
fn products(r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, a: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(r0, a), dot(r1, a), dot(r2, a), dot(r3, a));
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

  // acc_j: column colBase + j, rows rowBase .. + 3 as components: named vec4 registers (arrays
  // indexed in loops ran at under 1 TFLOP/s on an H200: the accumulators lived in local memory)
  var acc0 = vec4<f32>(0.0); var acc1 = vec4<f32>(0.0); var acc2 = vec4<f32>(0.0); var acc3 = vec4<f32>(0.0);
  var acc4 = vec4<f32>(0.0); var acc5 = vec4<f32>(0.0); var acc6 = vec4<f32>(0.0); var acc7 = vec4<f32>(0.0);
  if (colBase < R) {
    // rows past M and columns past R read row M − 1 / column R − 1 (never stored)
    let K4 = K / 4u;
    let mLast = params.m - 1u;
    let x0 = min(rowBase, mLast) * K4;
    let x1 = min(rowBase + 1u, mLast) * K4;
    let x2 = min(rowBase + 2u, mLast) * K4;
    let x3 = min(rowBase + 3u, mLast) * K4;
    let a0i = min(colBase, R - 1u) * K4;
    let a1i = min(colBase + 1u, R - 1u) * K4;
    let a2i = min(colBase + 2u, R - 1u) * K4;
    let a3i = min(colBase + 3u, R - 1u) * K4;
    let a4i = min(colBase + 4u, R - 1u) * K4;
    let a5i = min(colBase + 5u, R - 1u) * K4;
    let a6i = min(colBase + 6u, R - 1u) * K4;
    let a7i = min(colBase + 7u, R - 1u) * K4;
    for (var k4 = s; k4 < K4; k4 += LANES) {
      // row i's elements 4·k4 .. 4·k4 + 3
      var r0 = x[x0 + k4];
      var r1 = x[x1 + k4];
      var r2 = x[x2 + k4];
      var r3 = x[x3 + k4];
      if (dropping) {
        let kk = k4 * 4u;
        r0 = dropped(r0, stream, rowBase * K + kk);
        r1 = dropped(r1, stream, (rowBase + 1u) * K + kk);
        r2 = dropped(r2, stream, (rowBase + 2u) * K + kk);
        r3 = dropped(r3, stream, (rowBase + 3u) * K + kk);
      }
      acc0 += products(r0, r1, r2, r3, loadA(g, a0i + k4));
      acc1 += products(r0, r1, r2, r3, loadA(g, a1i + k4));
      acc2 += products(r0, r1, r2, r3, loadA(g, a2i + k4));
      acc3 += products(r0, r1, r2, r3, loadA(g, a3i + k4));
      acc4 += products(r0, r1, r2, r3, loadA(g, a4i + k4));
      acc5 += products(r0, r1, r2, r3, loadA(g, a5i + k4));
      acc6 += products(r0, r1, r2, r3, loadA(g, a6i + k4));
      acc7 += products(r0, r1, r2, r3, loadA(g, a7i + k4));
    }
  }

  // add the 32 slices' partial sums: round i takes row i of every thread's tile; thread o < 64
  // sums output o = (warp, column j) over the lanes in order and writes it
  for (var i = 0u; i < TM; i++) {
    let o = w * TN * PAD + s;
    partial[o] = acc0[i];
    partial[o + PAD] = acc1[i];
    partial[o + 2u * PAD] = acc2[i];
    partial[o + 3u * PAD] = acc3[i];
    partial[o + 4u * PAD] = acc4[i];
    partial[o + 5u * PAD] = acc5[i];
    partial[o + 6u * PAD] = acc6[i];
    partial[o + 7u * PAD] = acc7[i];
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
