// Dequant-matmul input gradient on subgroup matrices (tensor cores):
//   dX (M, K) f32 = [dX +] scale · dY (M, N) f32 · dequant(W) (N, K)
// the gradient of Y = X · Wᵀ with respect to X, W read in place from the forward's packed data
// (FORMAT 0 f32, 1 bf16x2, 2 nf4x8 with f32 block scales, 3 nf4x8 with double-quantised scales, as
// in matmul_sgm_forward.wgsl). The reduction runs over N (W's rows), the output over K (W's columns).
//
// f16 range (issue 11 item 4): gradients fall far below f16's normal range (2⁻¹⁴ ≈ 6.1e-5), so
// each row of dY is staged as f16(dY[m][n] · rowScale[m]), rowScale[m] a power of two that puts the
// row's largest magnitude at or below 2¹⁴ (the row-scale kernel's rule); the f32 epilogue multiplies
// output row m by scale / rowScale[m] (exact: powers of two) before it is stored or accumulated.
// A row whose scaled values exceed 65504 becomes ±Inf (rowScale 1 with |dY| > 65504); scaled values
// below 2⁻¹⁴ lose relative precision as f16 subnormals (absolute error ≤ 2⁻²⁵ / rowScale[m]).
// W's values are converted to f16 as they are: NF4 (absmax × codebook) and bf16 weights of a trained
// model lie far inside f16's range; an element above 65504 would become ±Inf and one below 2⁻¹⁴ a
// subnormal (absolute error ≤ 2⁻²⁵) — neither is rescaled here.
// rowScale must be a normal f32 with a normal reciprocal (2⁻¹²⁶ .. 2¹²⁶): GPUs may flush subnormals.
//
// Split reduction: workgroup z sums n in [z·slice, min(N, (z+1)·slice)) and writes its own (M, K)
// block at dx[z·M·K ..]. With one slice that is dX itself (scale applied, added when ACCUMULATE);
// with S slices the host binds an (S, M, K) scratch with scale 1 to a pipeline without ACCUMULATE
// and adds the slices in order with matmul_backward_reduce.wgsl (deterministic).
//
// Bindings (group 0):
//   0 params   uniform    MatmulSgmInputParams { m, n, k, slice, scale, offset }
//                         offset: the double-quantisation mean (FORMAT 3)
//   1 dx       read_write (S, M, K) f32 (S = 1: dX, read too with ACCUMULATE)
//   2 dy       read       (M, N) f32, read as vec4 (the host requires N % 4 == 0)
//   3 row_scale read      (M) f32 powers of two
//   4 w        read       (N, K) weight, read as vec4<u32>: 4 f32 | 8 bf16 | 32 nf4 codes (element
//                         8i+2j in the high nibble of byte j of word i; blocks of 64 over the flattened weight)
//   5 absmax   read       FORMAT 2: (N·K / 64) f32 bits; FORMAT 3: (N·K / 64) u8x4 codes; else unused
//   6 absmax2  read       FORMAT 3: (ceil(N·K / 64 / 256)) f32; else unused
//   7 qmap     read       FORMAT 3: (256) f32 bitsandbytes' signed dynamic map; else unused
// Dispatch: (ceil(K / BN), ceil(M / BM), S) workgroups of SG_M·SG_N subgroups of 32 invocations.
// K must be a multiple of 64 (the NF4 block; 8 columns of a row share one NF4 word and block).
// Saves nothing.
//
// Tiling: each workgroup owns a BM × BN tile of dX (BM = SG_M·FM·16 rows of M, BN = SG_N·FN·16
// columns of K); subgroup (sm, sn) owns FM × FN fragments of 16 × 16 (FM ≤ 2 with FN ≤ 8, or 4 × 4),
// held as result matrices for the whole reduction in named variables. Each reduction step of BK: the dY tile (BM × BK, f16, row-major, rows padded
// to BK + 8 halves) and the W tile (BK rows of W × BN columns, f16, row-major, rows padded to BN + 8)
// are staged; W's rows already run along the output, so the right fragments load row-major
// (col_major false) from the staged tile as W lies in memory, and 8 consecutive columns decode from
// one NF4 word with one block scale. With PREFETCH the next step's global loads are issued before
// this step's multiply-accumulates and held, still encoded, in registers (named variables, written
// out one by one under override guards, as the forward's staging). The epilogue passes every
// fragment through a per-subgroup 16 × 16 f32 scratch (the per-row factor cannot be applied to an
// opaque result matrix) and writes the elements inside dX.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);

override SG_M: u32 = 8u;  // subgroups along M
override SG_N: u32 = 1u;  // subgroups along K
override FM: u32 = 2u;    // fragments per subgroup along M: 1, 2 or 4
override FN: u32 = 8u;    // fragments per subgroup along K: 1 .. 8, at most 4 when FM = 4
override BK: u32 = 32u;   // reduction step: 16, 32 or 64
override FORMAT: u32 = 2u;
override ACCUMULATE: bool = false;
override PREFETCH: bool = true;

const PAD = 8u;
override THREADS: u32 = SG_M * SG_N * 32u;
override BM: u32 = SG_M * FM * 16u;
override BN: u32 = SG_N * FN * 16u;
override SA: u32 = BK + PAD; // row stride of the staged dY tile, in halves
override SB: u32 = BN + PAD; // row stride of the staged W tile, in halves
override B_OFFSET: u32 = BM * SA; // the W tile follows the dY tile in `tiles`
// subgroupMatrixLoad/Store take only fixed-size arrays: BM·SA + BK·SB ≤ TILE_HALVES, at most
// MAX_SUBGROUPS subgroups and BM ≤ MAX_ROWS (src/kernels/matmul-sgm-input.ts checks all three)
const TILE_HALVES = 15360u;
const MAX_SUBGROUPS = 8u;
const MAX_ROWS = 256u;

struct MatmulSgmInputParams {
  m: u32,
  n: u32,
  k: u32,
  slice: u32,
  scale: f32,
  offset: f32,
}

@group(0) @binding(0) var<uniform> params: MatmulSgmInputParams;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> absmax: array<u32>;
@group(0) @binding(6) var<storage, read> absmax2: array<f32>;
@group(0) @binding(7) var<storage, read> qmap: array<f32>;

var<workgroup> tiles: array<f16, TILE_HALVES>; // dY tile [BM][SA], then W tile [BK][SB]
var<workgroup> scratch: array<f32, MAX_SUBGROUPS * 256u>;
var<workgroup> rowS: array<f32, MAX_ROWS>;   // rowScale of the tile's rows (0 past row M)
var<workgroup> rowOut: array<f32, MAX_ROWS>; // scale / rowScale, the epilogue's factor
var<workgroup> nf4lut: array<f16, 16>;

// #include "lib/nf4_codebook.wgsl"

// Staging work items: dY in units of 4 elements of a row, W in units of 8; NX and NW per invocation.
override X_ITEMS: u32 = BM * BK / 4u;
override W_ITEMS: u32 = BK * BN / 8u;
override NX: u32 = (X_ITEMS + THREADS - 1u) / THREADS;
override NW: u32 = (W_ITEMS + THREADS - 1u) / THREADS;

// dY[m0 + r, l .. l+4) of item i at reduction offset l0, f32 (zeros below row M and past lEnd).
fn loadDy(i: u32, m0: u32, l0: u32, lEnd: u32) -> vec4<f32> {
  let r = i / (BK / 4u);
  let l = l0 + (i % (BK / 4u)) * 4u;
  if (i >= X_ITEMS || m0 + r >= params.m || l >= lEnd) {
    return vec4<f32>(0.0);
  }
  return dy[((m0 + r) * params.n + l) / 4u];
}

// itemScale(i): the row scale of dY item i, read into registers once by main
// #include "lib/sgm_item_scale.wgsl"

// Writes item i's four values, times its row's scale sc, as f16 into the dY tile.
fn storeDy(i: u32, v: vec4<f32>, sc: f32) {
  if (i >= X_ITEMS) {
    return;
  }
  let r = i / (BK / 4u);
  let h = vec4<f16>(v * sc);
  let d = r * SA + (i % (BK / 4u)) * 4u;
  tiles[d] = h.x;
  tiles[d + 1u] = h.y;
  tiles[d + 2u] = h.z;
  tiles[d + 3u] = h.w;
}

// W[l0 + r, k0 + c .. c+8) of item i, still encoded: f32 the 8 words (a, b); bf16 the 4 words of
// pairs (a); NF4 a.x the word of 8 codes, a.y the block scale's f32 bits (FORMAT 2) or its u8 code
// (FORMAT 3, a.z the chunk scale's f32 bits). a.w = 1 marks an item inside W (zeros outside).
struct WRaw {
  a: vec4<u32>,
  b: vec4<u32>,
}

fn loadW(i: u32, k0: u32, l0: u32, lEnd: u32) -> WRaw {
  var raw = WRaw(vec4<u32>(0u), vec4<u32>(0u));
  let r = i / (BN / 8u);
  let col = k0 + (i % (BN / 8u)) * 8u;
  if (i >= W_ITEMS || l0 + r >= lEnd || col >= params.k) {
    return raw;
  }
  let e = (l0 + r) * params.k + col; // flattened index of the first of the 8 elements
  if (FORMAT == 0u) {
    raw.a = w[e / 4u];
    raw.b = w[e / 4u + 1u];
  } else if (FORMAT == 1u) {
    raw.a = w[e / 8u];
  } else {
    let b = e / 64u;
    raw.a.x = w[e / 32u][(e / 8u) & 3u];
    if (FORMAT == 2u) {
      raw.a.y = absmax[b];
    } else {
      raw.a.y = (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu;
      raw.a.z = bitcast<u32>(absmax2[b >> 8u]);
    }
    raw.a.w = 1u;
  }
  return raw;
}

// Decodes item i to f16 and writes it into the W tile.
fn storeW(i: u32, raw: WRaw) {
  if (i >= W_ITEMS) {
    return;
  }
  let d = B_OFFSET + (i / (BN / 8u)) * SB + (i % (BN / 8u)) * 8u;
  var lo = vec4<f16>(0.0h);
  var hi = vec4<f16>(0.0h);
  if (FORMAT == 0u) {
    lo = vec4<f16>(bitcast<vec4<f32>>(raw.a));
    hi = vec4<f16>(bitcast<vec4<f32>>(raw.b));
  } else if (FORMAT == 1u) {
    let q = raw.a;
    lo = vec4<f16>(vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u)));
    hi = vec4<f16>(vec4<f32>(bitcast<f32>(q.z << 16u), bitcast<f32>(q.z & 0xffff0000u), bitcast<f32>(q.w << 16u), bitcast<f32>(q.w & 0xffff0000u)));
  } else if (raw.a.w != 0u) {
    var a = bitcast<f32>(raw.a.y);
    if (FORMAT == 3u) {
      a = qmap[raw.a.y] * bitcast<f32>(raw.a.z) + params.offset;
    }
    let s = f16(a);
    let word = raw.a.x;
    lo = vec4<f16>(nf4lut[(word >> 4u) & 15u], nf4lut[word & 15u], nf4lut[(word >> 12u) & 15u], nf4lut[(word >> 8u) & 15u]) * s;
    hi = vec4<f16>(nf4lut[(word >> 20u) & 15u], nf4lut[(word >> 16u) & 15u], nf4lut[(word >> 28u) & 15u], nf4lut[(word >> 24u) & 15u]) * s;
  }
  tiles[d] = lo.x;
  tiles[d + 1u] = lo.y;
  tiles[d + 2u] = lo.z;
  tiles[d + 3u] = lo.w;
  tiles[d + 4u] = hi.x;
  tiles[d + 5u] = hi.y;
  tiles[d + 6u] = hi.z;
  tiles[d + 7u] = hi.w;
}

// One invocation's staging items of one step: dY items li + q·THREADS (x_q) and W items (w_q),
// named variables used under override guards (at most 8 of each), so that they stay in registers.
struct Staged {
  x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
  w0: WRaw, w1: WRaw, w2: WRaw, w3: WRaw, w4: WRaw, w5: WRaw, w6: WRaw, w7: WRaw,
}

// Global loads of the step at reduction offset l0.
fn loadStep(li: u32, m0: u32, k0: u32, l0: u32, lEnd: u32) -> Staged {
  var s = Staged();
  s.x0 = loadDy(li, m0, l0, lEnd);
  if (NX > 1u) { s.x1 = loadDy(li + THREADS, m0, l0, lEnd); }
  if (NX > 2u) { s.x2 = loadDy(li + 2u * THREADS, m0, l0, lEnd); }
  if (NX > 3u) { s.x3 = loadDy(li + 3u * THREADS, m0, l0, lEnd); }
  if (NX > 4u) { s.x4 = loadDy(li + 4u * THREADS, m0, l0, lEnd); }
  if (NX > 5u) { s.x5 = loadDy(li + 5u * THREADS, m0, l0, lEnd); }
  if (NX > 6u) { s.x6 = loadDy(li + 6u * THREADS, m0, l0, lEnd); }
  if (NX > 7u) { s.x7 = loadDy(li + 7u * THREADS, m0, l0, lEnd); }
  s.w0 = loadW(li, k0, l0, lEnd);
  if (NW > 1u) { s.w1 = loadW(li + THREADS, k0, l0, lEnd); }
  if (NW > 2u) { s.w2 = loadW(li + 2u * THREADS, k0, l0, lEnd); }
  if (NW > 3u) { s.w3 = loadW(li + 3u * THREADS, k0, l0, lEnd); }
  if (NW > 4u) { s.w4 = loadW(li + 4u * THREADS, k0, l0, lEnd); }
  if (NW > 5u) { s.w5 = loadW(li + 5u * THREADS, k0, l0, lEnd); }
  if (NW > 6u) { s.w6 = loadW(li + 6u * THREADS, k0, l0, lEnd); }
  if (NW > 7u) { s.w7 = loadW(li + 7u * THREADS, k0, l0, lEnd); }
  return s;
}

// Converts and writes a step's items into the tiles.
fn storeStep(li: u32, s: Staged, xs: array<f32, 8>) {
  storeDy(li, s.x0, xs[0]);
  if (NX > 1u) { storeDy(li + THREADS, s.x1, xs[1]); }
  if (NX > 2u) { storeDy(li + 2u * THREADS, s.x2, xs[2]); }
  if (NX > 3u) { storeDy(li + 3u * THREADS, s.x3, xs[3]); }
  if (NX > 4u) { storeDy(li + 4u * THREADS, s.x4, xs[4]); }
  if (NX > 5u) { storeDy(li + 5u * THREADS, s.x5, xs[5]); }
  if (NX > 6u) { storeDy(li + 6u * THREADS, s.x6, xs[6]); }
  if (NX > 7u) { storeDy(li + 7u * THREADS, s.x7, xs[7]); }
  storeW(li, s.w0);
  if (NW > 1u) { storeW(li + THREADS, s.w1); }
  if (NW > 2u) { storeW(li + 2u * THREADS, s.w2); }
  if (NW > 3u) { storeW(li + 3u * THREADS, s.w3); }
  if (NW > 4u) { storeW(li + 4u * THREADS, s.w4); }
  if (NW > 5u) { storeW(li + 5u * THREADS, s.w5); }
  if (NW > 6u) { storeW(li + 6u * THREADS, s.w6); }
  if (NW > 7u) { storeW(li + 7u * THREADS, s.w7); }
}

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

// Writes fragment (i, j) of this subgroup (first row rowF, first column colF of dX) through the
// subgroup's scratch: each element inside dX times its row's factor, added with ACCUMULATE.
// Called the same number of times by every subgroup (the barriers are workgroup-wide).
fn storeFrag(acc: Frag, sg: u32, lane: u32, m0: u32, rowF: u32, colF: u32, i: u32, j: u32, base: u32) {
  subgroupMatrixStore(&scratch, sg * 256u, acc, false, 16u);
  workgroupBarrier();
  for (var t = lane; t < 256u; t += 32u) {
    let row = rowF + 16u * i + t / 16u;
    let col = colF + 16u * j + t % 16u;
    if (row < params.m && col < params.k) {
      let o = base + row * params.k + col;
      let v = scratch[sg * 256u + t] * rowOut[row - m0];
      if (ACCUMULATE) {
        dx[o] = dx[o] + v;
      } else {
        dx[o] = v;
      }
    }
  }
  workgroupBarrier();
}

// Right fragment j of this subgroup at reduction offset kk of the staged W tile.
fn loadRight(sn: u32, j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&tiles, B_OFFSET + kk * SB + sn * FN * 16u + j * 16u, false, SB);
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let k0 = wg.x * BN;
  let m0 = wg.y * BM;
  let lStart = wg.z * params.slice;
  let lEnd = min(params.n, lStart + params.slice);
  let base = wg.z * params.m * params.k;
  let sg = li / 32u;
  let lane = li % 32u;
  let sm = sg / SG_N;
  let sn = sg % SG_N;
  if (li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = f16(bitcast<f32>(codebook[li]));
  }
  for (var r = li; r < BM; r += THREADS) {
    var s = 0.0;
    var f = 0.0;
    if (m0 + r < params.m) {
      s = row_scale[m0 + r];
      f = params.scale / s;
    }
    rowS[r] = s;
    rowOut[r] = f;
  }
  let rowF = m0 + sm * FM * 16u; // first row of this subgroup's fragments
  let colF = k0 + sn * FN * 16u;

  var acc00 = Frag(); var acc01 = Frag(); var acc02 = Frag(); var acc03 = Frag(); var acc04 = Frag(); var acc05 = Frag(); var acc06 = Frag(); var acc07 = Frag();
  var acc10 = Frag(); var acc11 = Frag(); var acc12 = Frag(); var acc13 = Frag(); var acc14 = Frag(); var acc15 = Frag(); var acc16 = Frag(); var acc17 = Frag();
  // FM = 4 (FN ≤ 4): 4 × 4 fragments, 8 fragment loads per 16 multiply-accumulates instead of 2 × 8's 10
  var acc20 = Frag(); var acc21 = Frag(); var acc22 = Frag(); var acc23 = Frag();
  var acc30 = Frag(); var acc31 = Frag(); var acc32 = Frag(); var acc33 = Frag();
  workgroupBarrier();
  let xs = array<f32, 8>(itemScale(li), itemScale(li + THREADS), itemScale(li + 2u * THREADS), itemScale(li + 3u * THREADS),
                         itemScale(li + 4u * THREADS), itemScale(li + 5u * THREADS), itemScale(li + 6u * THREADS), itemScale(li + 7u * THREADS));

  var steps = 0u;
  if (lEnd > lStart) {
    steps = (lEnd - lStart + BK - 1u) / BK;
  }
  // this invocation's staging items of the step about to be staged, loaded and still encoded
  var staged = Staged();
  if (PREFETCH && steps > 0u) {
    staged = loadStep(li, m0, k0, lStart, lEnd);
  }
  for (var t = 0u; t < steps; t++) {
    let l0 = lStart + t * BK;
    if (!PREFETCH) {
      staged = loadStep(li, m0, k0, l0, lEnd);
    }
    storeStep(li, staged, xs);
    workgroupBarrier();
    // with PREFETCH the next step's global loads are in flight during this step's arithmetic
    if (PREFETCH && t + 1u < steps) {
      staged = loadStep(li, m0, k0, l0 + BK, lEnd);
    }
    for (var kk = 0u; kk < BK; kk += 16u) {
      let aRow = (sm * FM * 16u) * SA + kk;
      let a0 = subgroupMatrixLoad<Left>(&tiles, aRow, false, SA);
      var a1 = Left();
      if (FM > 1u) { a1 = subgroupMatrixLoad<Left>(&tiles, aRow + 16u * SA, false, SA); }
      var a2 = Left();
      var a3 = Left();
      if (FM > 2u) {
        a2 = subgroupMatrixLoad<Left>(&tiles, aRow + 32u * SA, false, SA);
        a3 = subgroupMatrixLoad<Left>(&tiles, aRow + 48u * SA, false, SA);
      }
      { let b = loadRight(sn, 0u, kk); acc00 = subgroupMatrixMultiplyAccumulate(a0, b, acc00); if (FM > 1u) { acc10 = subgroupMatrixMultiplyAccumulate(a1, b, acc10); } if (FM > 2u) { acc20 = subgroupMatrixMultiplyAccumulate(a2, b, acc20); acc30 = subgroupMatrixMultiplyAccumulate(a3, b, acc30); } }
      if (FN > 1u) { let b = loadRight(sn, 1u, kk); acc01 = subgroupMatrixMultiplyAccumulate(a0, b, acc01); if (FM > 1u) { acc11 = subgroupMatrixMultiplyAccumulate(a1, b, acc11); } if (FM > 2u) { acc21 = subgroupMatrixMultiplyAccumulate(a2, b, acc21); acc31 = subgroupMatrixMultiplyAccumulate(a3, b, acc31); } }
      if (FN > 2u) { let b = loadRight(sn, 2u, kk); acc02 = subgroupMatrixMultiplyAccumulate(a0, b, acc02); if (FM > 1u) { acc12 = subgroupMatrixMultiplyAccumulate(a1, b, acc12); } if (FM > 2u) { acc22 = subgroupMatrixMultiplyAccumulate(a2, b, acc22); acc32 = subgroupMatrixMultiplyAccumulate(a3, b, acc32); } }
      if (FN > 3u) { let b = loadRight(sn, 3u, kk); acc03 = subgroupMatrixMultiplyAccumulate(a0, b, acc03); if (FM > 1u) { acc13 = subgroupMatrixMultiplyAccumulate(a1, b, acc13); } if (FM > 2u) { acc23 = subgroupMatrixMultiplyAccumulate(a2, b, acc23); acc33 = subgroupMatrixMultiplyAccumulate(a3, b, acc33); } }
      if (FN > 4u) { let b = loadRight(sn, 4u, kk); acc04 = subgroupMatrixMultiplyAccumulate(a0, b, acc04); if (FM > 1u) { acc14 = subgroupMatrixMultiplyAccumulate(a1, b, acc14); } }
      if (FN > 5u) { let b = loadRight(sn, 5u, kk); acc05 = subgroupMatrixMultiplyAccumulate(a0, b, acc05); if (FM > 1u) { acc15 = subgroupMatrixMultiplyAccumulate(a1, b, acc15); } }
      if (FN > 6u) { let b = loadRight(sn, 6u, kk); acc06 = subgroupMatrixMultiplyAccumulate(a0, b, acc06); if (FM > 1u) { acc16 = subgroupMatrixMultiplyAccumulate(a1, b, acc16); } }
      if (FN > 7u) { let b = loadRight(sn, 7u, kk); acc07 = subgroupMatrixMultiplyAccumulate(a0, b, acc07); if (FM > 1u) { acc17 = subgroupMatrixMultiplyAccumulate(a1, b, acc17); } }
    }
    workgroupBarrier();
  }

  storeFrag(acc00, sg, lane, m0, rowF, colF, 0u, 0u, base);
  if (FN > 1u) { storeFrag(acc01, sg, lane, m0, rowF, colF, 0u, 1u, base); }
  if (FN > 2u) { storeFrag(acc02, sg, lane, m0, rowF, colF, 0u, 2u, base); }
  if (FN > 3u) { storeFrag(acc03, sg, lane, m0, rowF, colF, 0u, 3u, base); }
  if (FN > 4u) { storeFrag(acc04, sg, lane, m0, rowF, colF, 0u, 4u, base); }
  if (FN > 5u) { storeFrag(acc05, sg, lane, m0, rowF, colF, 0u, 5u, base); }
  if (FN > 6u) { storeFrag(acc06, sg, lane, m0, rowF, colF, 0u, 6u, base); }
  if (FN > 7u) { storeFrag(acc07, sg, lane, m0, rowF, colF, 0u, 7u, base); }
  if (FM > 1u) {
    storeFrag(acc10, sg, lane, m0, rowF, colF, 1u, 0u, base);
    if (FN > 1u) { storeFrag(acc11, sg, lane, m0, rowF, colF, 1u, 1u, base); }
    if (FN > 2u) { storeFrag(acc12, sg, lane, m0, rowF, colF, 1u, 2u, base); }
    if (FN > 3u) { storeFrag(acc13, sg, lane, m0, rowF, colF, 1u, 3u, base); }
    if (FN > 4u) { storeFrag(acc14, sg, lane, m0, rowF, colF, 1u, 4u, base); }
    if (FN > 5u) { storeFrag(acc15, sg, lane, m0, rowF, colF, 1u, 5u, base); }
    if (FN > 6u) { storeFrag(acc16, sg, lane, m0, rowF, colF, 1u, 6u, base); }
    if (FN > 7u) { storeFrag(acc17, sg, lane, m0, rowF, colF, 1u, 7u, base); }
  }
  if (FM > 2u) {
    storeFrag(acc20, sg, lane, m0, rowF, colF, 2u, 0u, base);
    if (FN > 1u) { storeFrag(acc21, sg, lane, m0, rowF, colF, 2u, 1u, base); }
    if (FN > 2u) { storeFrag(acc22, sg, lane, m0, rowF, colF, 2u, 2u, base); }
    if (FN > 3u) { storeFrag(acc23, sg, lane, m0, rowF, colF, 2u, 3u, base); }
    storeFrag(acc30, sg, lane, m0, rowF, colF, 3u, 0u, base);
    if (FN > 1u) { storeFrag(acc31, sg, lane, m0, rowF, colF, 3u, 1u, base); }
    if (FN > 2u) { storeFrag(acc32, sg, lane, m0, rowF, colF, 3u, 2u, base); }
    if (FN > 3u) { storeFrag(acc33, sg, lane, m0, rowF, colF, 3u, 3u, base); }
  }
}
