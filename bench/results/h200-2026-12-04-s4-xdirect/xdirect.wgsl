// PROBE (not project code): Y (M,N) f32 = diag(1/s) · Xh (M,K) f16 · dequant(W)ᵀ, Xh already f16(x·s).
// Left fragments straight from the f16 X in storage (no X staging: in the 8×1 layout each subgroup
// owns its rows); W (NF4, f32 block scales) staged, double-buffered, one barrier per K step.
enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);

override SG_M: u32 = 8u;
override FN: u32 = 8u;      // fragments along N per subgroup (FM = 2 fixed)
const FM = 2u;
const BK = 32u;
const PAD = 8u;
const SK = BK + PAD;
override THREADS: u32 = SG_M * 32u;
override BM: u32 = SG_M * FM * 16u;
override BN: u32 = FN * 16u;
override W_HALVES: u32 = BN * SK;
override W_ITEMS: u32 = BN * BK / 8u;
override NW: u32 = (W_ITEMS + THREADS - 1u) / THREADS;
override PIPE_A: bool = true; // the next step's left fragments loaded before this step's products

struct Params { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> xh: array<f16>;
@group(0) @binding(3) var<storage, read> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> absmax: array<u32>;

var<workgroup> wt: array<f16, 10240>; // two W tiles [BN][SK] (BN ≤ 128)
var<workgroup> scratch: array<f32, 2048>;
var<workgroup> rowInv: array<f32, 256>;
var<workgroup> nf4lut: array<f16, 16>;

const NF4_CODEBOOK = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u,
);

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

struct WItem { word: u32, scale: u32 }

fn loadW(i: u32, n0: u32, k0: u32) -> WItem {
  var raw = WItem(0u, 0u);
  let r = i / (BK / 8u);
  if (i >= W_ITEMS || n0 + r >= params.n) { return raw; }
  let e = (n0 + r) * params.k + k0 + (i % (BK / 8u)) * 8u;
  raw.word = w[e / 32u][(e / 8u) & 3u];
  raw.scale = absmax[e / 64u];
  return raw;
}

fn storeW(i: u32, raw: WItem, base: u32) {
  if (i >= W_ITEMS) { return; }
  let r = i / (BK / 8u);
  let c = (i % (BK / 8u)) * 8u;
  let s = f16(bitcast<f32>(raw.scale));
  let word = raw.word;
  let lo = vec4<f16>(nf4lut[(word >> 4u) & 15u], nf4lut[word & 15u], nf4lut[(word >> 12u) & 15u], nf4lut[(word >> 8u) & 15u]) * s;
  let hi = vec4<f16>(nf4lut[(word >> 20u) & 15u], nf4lut[(word >> 16u) & 15u], nf4lut[(word >> 28u) & 15u], nf4lut[(word >> 24u) & 15u]) * s;
  let d = base + r * SK + c;
  wt[d] = lo.x; wt[d + 1u] = lo.y; wt[d + 2u] = lo.z; wt[d + 3u] = lo.w;
  wt[d + 4u] = hi.x; wt[d + 5u] = hi.y; wt[d + 6u] = hi.z; wt[d + 7u] = hi.w;
}

struct WStep { w0: WItem, w1: WItem, w2: WItem, w3: WItem }
fn loadWStep(li: u32, n0: u32, k0: u32) -> WStep {
  var s = WStep();
  s.w0 = loadW(li, n0, k0);
  if (NW > 1u) { s.w1 = loadW(li + THREADS, n0, k0); }
  if (NW > 2u) { s.w2 = loadW(li + 2u * THREADS, n0, k0); }
  if (NW > 3u) { s.w3 = loadW(li + 3u * THREADS, n0, k0); }
  return s;
}
fn storeWStep(li: u32, s: WStep, base: u32) {
  storeW(li, s.w0, base);
  if (NW > 1u) { storeW(li + THREADS, s.w1, base); }
  if (NW > 2u) { storeW(li + 2u * THREADS, s.w2, base); }
  if (NW > 3u) { storeW(li + 3u * THREADS, s.w3, base); }
}

// Left fragments of rows (first row rowG, global) at k: rows past M are clamped to row M-1's
// fragment start (their outputs are not written).
struct AStep { a00: Left, a01: Left, a10: Left, a11: Left }
fn loadA(rowG: u32, k0: u32) -> AStep {
  var s = AStep();
  let K = params.k;
  let r0 = min(rowG, params.m - 16u);
  let r1 = min(rowG + 16u, params.m - 16u);
  s.a00 = subgroupMatrixLoad<Left>(&xh, r0 * K + k0, false, K);
  s.a01 = subgroupMatrixLoad<Left>(&xh, r0 * K + k0 + 16u, false, K);
  s.a10 = subgroupMatrixLoad<Left>(&xh, r1 * K + k0, false, K);
  s.a11 = subgroupMatrixLoad<Left>(&xh, r1 * K + k0 + 16u, false, K);
  return s;
}

fn loadRight(base: u32, j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&wt, base + j * 16u * SK + kk, true, SK);
}

fn storeFrag(acc: Frag, sg: u32, lane: u32, m0: u32, rowT: u32, colF: u32, i: u32, j: u32) {
  subgroupMatrixStore(&scratch, sg * 256u, acc, false, 16u);
  workgroupBarrier();
  let c = lane % 16u;
  let col = colF + 16u * j + c;
  for (var q = 0u; q < 8u; q++) {
    let rt = rowT + 16u * i + lane / 16u + 2u * q;
    let row = m0 + rt;
    if (row < params.m && col < params.n) {
      y[row * params.n + col] = scratch[sg * 256u + (lane / 16u + 2u * q) * 16u + c] * rowInv[rt];
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n0 = wg.x * BN;
  let m0 = wg.y * BM;
  let sg = li / 32u;
  let lane = li % 32u;
  if (li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = f16(bitcast<f32>(codebook[li]));
  }
  for (var i = li; i < BM; i += THREADS) {
    var s = 1.0;
    if (m0 + i < params.m) { s = row_scale[m0 + i]; }
    rowInv[i] = 1.0 / s;
  }
  let rowT = sg * FM * 16u;
  let rowG = m0 + rowT;
  var acc00 = Frag(); var acc01 = Frag(); var acc02 = Frag(); var acc03 = Frag(); var acc04 = Frag(); var acc05 = Frag(); var acc06 = Frag(); var acc07 = Frag();
  var acc10 = Frag(); var acc11 = Frag(); var acc12 = Frag(); var acc13 = Frag(); var acc14 = Frag(); var acc15 = Frag(); var acc16 = Frag(); var acc17 = Frag();
  let steps = params.k / BK;
  workgroupBarrier(); // nf4lut
  storeWStep(li, loadWStep(li, n0, 0u), 0u);
  var a = loadA(rowG, 0u);
  workgroupBarrier();
  for (var t = 0u; t < steps; t++) {
    let base = (t % 2u) * W_HALVES;
    let more = t + 1u < steps;
    var wn = WStep();
    var an = AStep();
    if (more) {
      wn = loadWStep(li, n0, (t + 1u) * BK);
      if (PIPE_A) { an = loadA(rowG, (t + 1u) * BK); }
    }
    for (var h = 0u; h < 2u; h++) {
      let kk = h * 16u;
      var x0 = a.a00; var x1 = a.a10;
      if (h == 1u) { x0 = a.a01; x1 = a.a11; }
      { let b = loadRight(base, 0u, kk); acc00 = subgroupMatrixMultiplyAccumulate(x0, b, acc00); acc10 = subgroupMatrixMultiplyAccumulate(x1, b, acc10); }
      if (FN > 1u) { let b = loadRight(base, 1u, kk); acc01 = subgroupMatrixMultiplyAccumulate(x0, b, acc01); acc11 = subgroupMatrixMultiplyAccumulate(x1, b, acc11); }
      if (FN > 2u) { let b = loadRight(base, 2u, kk); acc02 = subgroupMatrixMultiplyAccumulate(x0, b, acc02); acc12 = subgroupMatrixMultiplyAccumulate(x1, b, acc12); }
      if (FN > 3u) { let b = loadRight(base, 3u, kk); acc03 = subgroupMatrixMultiplyAccumulate(x0, b, acc03); acc13 = subgroupMatrixMultiplyAccumulate(x1, b, acc13); }
      if (FN > 4u) { let b = loadRight(base, 4u, kk); acc04 = subgroupMatrixMultiplyAccumulate(x0, b, acc04); acc14 = subgroupMatrixMultiplyAccumulate(x1, b, acc14); }
      if (FN > 5u) { let b = loadRight(base, 5u, kk); acc05 = subgroupMatrixMultiplyAccumulate(x0, b, acc05); acc15 = subgroupMatrixMultiplyAccumulate(x1, b, acc15); }
      if (FN > 6u) { let b = loadRight(base, 6u, kk); acc06 = subgroupMatrixMultiplyAccumulate(x0, b, acc06); acc16 = subgroupMatrixMultiplyAccumulate(x1, b, acc16); }
      if (FN > 7u) { let b = loadRight(base, 7u, kk); acc07 = subgroupMatrixMultiplyAccumulate(x0, b, acc07); acc17 = subgroupMatrixMultiplyAccumulate(x1, b, acc17); }
    }
    if (more) {
      storeWStep(li, wn, W_HALVES - base);
      if (PIPE_A) { a = an; } else { a = loadA(rowG, (t + 1u) * BK); }
    }
    workgroupBarrier();
  }
  let colF = n0;
  storeFrag(acc00, sg, lane, m0, rowT, colF, 0u, 0u);
  if (FN > 1u) { storeFrag(acc01, sg, lane, m0, rowT, colF, 0u, 1u); }
  if (FN > 2u) { storeFrag(acc02, sg, lane, m0, rowT, colF, 0u, 2u); }
  if (FN > 3u) { storeFrag(acc03, sg, lane, m0, rowT, colF, 0u, 3u); }
  if (FN > 4u) { storeFrag(acc04, sg, lane, m0, rowT, colF, 0u, 4u); }
  if (FN > 5u) { storeFrag(acc05, sg, lane, m0, rowT, colF, 0u, 5u); }
  if (FN > 6u) { storeFrag(acc06, sg, lane, m0, rowT, colF, 0u, 6u); }
  if (FN > 7u) { storeFrag(acc07, sg, lane, m0, rowT, colF, 0u, 7u); }
  storeFrag(acc10, sg, lane, m0, rowT, colF, 1u, 0u);
  if (FN > 1u) { storeFrag(acc11, sg, lane, m0, rowT, colF, 1u, 1u); }
  if (FN > 2u) { storeFrag(acc12, sg, lane, m0, rowT, colF, 1u, 2u); }
  if (FN > 3u) { storeFrag(acc13, sg, lane, m0, rowT, colF, 1u, 3u); }
  if (FN > 4u) { storeFrag(acc14, sg, lane, m0, rowT, colF, 1u, 4u); }
  if (FN > 5u) { storeFrag(acc15, sg, lane, m0, rowT, colF, 1u, 5u); }
  if (FN > 6u) { storeFrag(acc16, sg, lane, m0, rowT, colF, 1u, 6u); }
  if (FN > 7u) { storeFrag(acc17, sg, lane, m0, rowT, colF, 1u, 7u); }
}
