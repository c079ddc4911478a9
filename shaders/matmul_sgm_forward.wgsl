// Dequant-matmul forward on subgroup matrices (tensor cores), f16 operands scaled per row:
//   Y (M, N) f32 = [Y +] diag(1/s) · f16(diag(s) · X) · f16(dequant(W))ᵀ  [+ scale · U (M, R) · Lᵀ]
// X (M, K) f32 is multiplied row by row by s = row_scale (M) f32 — powers of two from
// shaders/row_scale.wgsl that bring each row's largest |x| into [2^13, 2^14] — and converted to f16
// while staging, so activations past f16's 65504 do not overflow and tiny rows do not underflow
// (issue 11 item 4); W (PyTorch (N, K) layout; FORMAT 0 f32, 1 bf16x2, 2 nf4x8 with f32 block
// scales, 3 nf4x8 with double-quantised scales, as in matmul_forward.wgsl) is decoded to f16 while
// staging; 16×16×16 f16 fragments multiply with f32 accumulation. The epilogue, in f32, multiplies
// output row m by 1/s[m] (exact), adds the LoRA term scale · U[m]·L[n] (LORA; U = X·Aᵀ computed
// before, L the (N, R) lora_B) and Y's old value (ACCUMULATE, the residual stream), as
// matmul_forward.wgsl does. K must be a multiple of BK (the host requires K % 64 == 0, the NF4
// block); M and N are arbitrary.
//
// Bindings (group 0):
//   0 params     uniform    MatmulSgmParams { m, n, k, r, scale, offset }   r, scale for LORA; offset for FORMAT 3
//   1 y          read_write (M, N) f32
//   2 x          read       (M, K) f32, read as vec4
//   3 row_scale  read       (M) f32 powers of two (2^-126 .. 2^126)
//   4 w          read       (N, K) weight, read as vec4<u32>: 4 f32 | 8 bf16 | 32 nf4 codes (element
//                           8i+2j in the high nibble of byte j of word i; blocks of 64 over the flattened weight)
//   5 absmax     read       FORMAT 2: (N·K / 64) f32 bits; FORMAT 3: (N·K / 64) u8x4 codes; else unused
//   6 absmax2    read       FORMAT 3: (ceil(N·K / 64 / 256)) f32; else unused
//   7 qmap       read       FORMAT 3: (256) f32 bitsandbytes' signed dynamic map; else unused
//   8 u          read       LORA: (M, R) f32; else unused
//   9 lora_b     read       LORA: (N, R) f32; else unused
//  10 u4         read       the buffer of u again, read as vec4 where R % 4 == 0 (the epilogue's loads
//  11 lora_b4    read       the buffer of lora_b again, as vec4  — a quarter of them); else unused
// Dispatch: (ceil(N / BN), ceil(M / BM)) workgroups of SG_M·SG_N subgroups of 32 invocations.
// Saves nothing (the backward needs X and its row scales, which the caller keeps).
//
// Tiling: each workgroup owns a BM × BN tile of Y, BM = SG_M·FM·16 and BN = SG_N·FN·16; subgroup
// (sm, sn) owns FM × FN fragments of 16 × 16 (rows sm·FM·16 .., columns sn·FN·16 ..), held as
// result matrices for the whole reduction. The tile's BM row scales and their reciprocals are read
// once into workgroup memory. Each K step of BK: all invocations stage the X tile (BM × BK,
// f16(x·s), row-major) and the W tile (BN × BK, f16, one row per output column) with rows padded
// to BK + 8 halves (without padding the fragment loads conflict on banks: 2× slower in the probe);
// one barrier; each subgroup loads its FM left and FN right fragments per 16 of k and issues
// FM·FN multiply-accumulates; one barrier. The staging is split as in the input gradient's kernel
// (shaders/matmul_sgm_input.wgsl): the global loads of a step (X as vec4 of f32; W still encoded:
// NF4 codes and the block scale) into named registers, then vec4 conversions to f16 and the tile
// writes — 1.3× the first version's TFLOP/s at gate/up and q, 1.45× at o and down (H200,
// 2026-12-04). With PREFETCH (an option, off by default: no faster in the same measurement) the
// next step's loads are issued after the first barrier and held during the multiply-accumulates. Result fragments are opaque, so the per-row epilogue
// passes each through a per-subgroup 16 × 16 f32 scratch: lane l then owns column l % 16 and rows
// l / 16 + 2q (q < 8) of the fragment and writes the elements inside Y.
// The LoRA term, R ≤ BK (Qwen3 runs take r = 8 .. 32 with BK = 32), runs on the tensor cores too:
// after the reduction the tiles hold U's BM rows and L's BN rows (the tile's columns) in place of
// X and W, each row as f16(row · 2^e) with its own power-of-two scale (the rule of
// shaders/lib/f16_scale.wgsl: the row's largest |value| lands in [2^13, 2^14]; R padded with zeros
// to a multiple of 16), their inverses in rowS and colInv; each output fragment's U·Lᵀ is R/16
// fragment products, passed through the scratch and multiplied by both inverses in f32 (exact:
// powers of two), so the term carries two f16 operand roundings (2^-11 each). R > BK: lane l reads
// its L row once per r (four r a load where R % 4 == 0, through the vec4 views u4 and lora_b4 of
// the same buffers) for the 8 rows' LoRA sums in f32 — 15–20 % of the kernel's time at r = 32 on
// the H200 (2026-12-04), the reason for the tensor-core term.
// The 2 × 8 accumulators are named variables, each used under `if (FM > i && FN > j)` (override
// constants, so the unused ones compile away): an array of them indexed in loops ran about 2×
// slower on an H200 (45.6 against 22.2 TFLOP/s at gate/up, 256 × 128 tiles).

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);

override SG_M: u32 = 4u;  // subgroups along M
override SG_N: u32 = 2u;  // subgroups along N
override FM: u32 = 2u;    // fragments per subgroup along M: 1 or 2
override FN: u32 = 8u;    // fragments per subgroup along N: 1 .. 8
override BK: u32 = 32u;   // reduction step: 32 or 64
override FORMAT: u32 = 2u;
override ACCUMULATE: bool = false;
override LORA: bool = false;
override UNROLL: bool = true; // straight-line staging (see Staged); needs NX, NW <= 8
override PREFETCH: bool = false; // UNROLL only: the next K step's global loads issued before this step's multiply-accumulates

const PAD = 8u;
override THREADS: u32 = SG_M * SG_N * 32u;
override BM: u32 = SG_M * FM * 16u;
override BN: u32 = SG_N * FN * 16u;
override SK: u32 = BK + PAD; // row stride of the staged tiles, in halves
override B_OFFSET: u32 = BM * SK; // the W tile follows the X tile in `tiles`
// subgroupMatrixLoad/Store take only fixed-size (or runtime-sized) arrays, not override-sized
// ones: the staging arrays have the largest size a tile may use, (BM + BN)·SK ≤ TILE_HALVES
// halves, ≤ MAX_SUBGROUPS subgroups and BM ≤ MAX_ROWS (src/kernels/matmul-sgm.ts checks all
// three), 40 KiB in all
const TILE_HALVES = 15360u;
const MAX_SUBGROUPS = 8u;
const MAX_ROWS = 256u;
const MAX_COLS = 256u;

struct MatmulSgmParams {
  m: u32,
  n: u32,
  k: u32,
  r: u32,
  scale: f32,
  offset: f32,
}

@group(0) @binding(0) var<uniform> params: MatmulSgmParams;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> absmax: array<u32>;
@group(0) @binding(6) var<storage, read> absmax2: array<f32>;
@group(0) @binding(7) var<storage, read> qmap: array<f32>;
@group(0) @binding(8) var<storage, read> u: array<f32>;
@group(0) @binding(9) var<storage, read> lora_b: array<f32>;
@group(0) @binding(10) var<storage, read> u4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read> lora_b4: array<vec4<f32>>;

var<workgroup> tiles: array<f16, TILE_HALVES>; // X tile [BM][SK], then W tile [BN][SK]
var<workgroup> scratch: array<f32, MAX_SUBGROUPS * 256u>;
var<workgroup> nf4lut: array<f16, 16>;
var<workgroup> rowS: array<f32, MAX_ROWS>;   // row_scale of the tile's rows (1 past row M)
var<workgroup> rowInv: array<f32, MAX_ROWS>; // 1 / row_scale, the epilogue's factor
var<workgroup> colInv: array<f32, MAX_COLS>; // LoRA on tensor cores: 1 / the scale of each tile column's L row (rowS then holds U's)

// #include "lib/nf4_codebook.wgsl"

// #include "lib/nf4_block_scale.wgsl"

// #include "lib/f16_scale.wgsl"

// Staging work items: X in units of 4 elements, W in units of 8, NX and NW items per invocation.
override X_ITEMS: u32 = BM * BK / 4u;
override W_ITEMS: u32 = BN * BK / 8u;
override NX: u32 = (X_ITEMS + THREADS - 1u) / THREADS;
override NW: u32 = (W_ITEMS + THREADS - 1u) / THREADS;

// itemScale(i): the row scale of X item i, read into registers once by main
// #include "lib/sgm_item_scale.wgsl"

// X[m0 + r, k0 + c .. c+4) of item i, f32 (zeros below row M and past the items).
fn loadX(i: u32, m0: u32, k0: u32) -> vec4<f32> {
  let r = i / (BK / 4u);
  let c = (i % (BK / 4u)) * 4u;
  if (i >= X_ITEMS || m0 + r >= params.m) {
    return vec4<f32>(0.0);
  }
  return x[((m0 + r) * params.k + k0 + c) / 4u];
}

// Writes item i's four values, times its row's scale s, as f16 into the X tile.
fn storeX(i: u32, v: vec4<f32>, s: f32) {
  if (i >= X_ITEMS) {
    return;
  }
  let h = vec4<f16>(v * s);
  let d = (i / (BK / 4u)) * SK + (i % (BK / 4u)) * 4u;
  tiles[d] = h.x;
  tiles[d + 1u] = h.y;
  tiles[d + 2u] = h.z;
  tiles[d + 3u] = h.w;
}

// W[n0 + r, k0 + c .. c+8) of item i, still encoded (zeros past row N and past the items): FORMAT 0
// the 8 f32 words (a, b), 1 the 4 words of bf16 pairs (a), NF4 a.x the word of 8 codes (element
// 8i+2j in the high nibble of byte j) and a.y its block scale's f32 bits (the probe's unit: with
// 32 codes per item only half the invocations of a 256 × 128 tile had W work).
struct WItem {
  a: vec4<u32>,
  b: vec4<u32>,
}

fn loadW(i: u32, n0: u32, k0: u32) -> WItem {
  var raw = WItem(vec4<u32>(0u), vec4<u32>(0u));
  let r = i / (BK / 8u);
  if (i >= W_ITEMS || n0 + r >= params.n) {
    return raw;
  }
  let e = (n0 + r) * params.k + k0 + (i % (BK / 8u)) * 8u; // flattened index of the first of the 8 elements
  if (FORMAT == 0u) {
    raw.a = w[e / 4u];
    raw.b = w[e / 4u + 1u];
  } else if (FORMAT == 1u) {
    raw.a = w[e / 8u];
  } else {
    raw.a.x = w[e / 32u][(e / 8u) & 3u];
    raw.a.y = bitcast<u32>(blockScale(e / 64u));
  }
  return raw;
}

// Where W tile element (output column n of the tile, reduction index c of the K step) lies in
// `tiles`: row n of [BN][SK], loaded column-major as right fragments. (Staged transposed,
// [BK][BN + 8] and loaded row-major as the input gradient's W tile is, it ran no faster: H200,
// 2026-12-04, bench/results/h200-2026-12-04-lora-tensor-cores.md.)
fn wAt(n: u32, c: u32) -> u32 {
  return B_OFFSET + n * SK + c;
}

// Decodes item i to f16 and writes it into the W tile: row r (an output column), 8 of K.
fn storeW(i: u32, raw: WItem) {
  if (i >= W_ITEMS) {
    return;
  }
  let r = i / (BK / 8u);
  let c = (i % (BK / 8u)) * 8u;
  var lo = vec4<f16>(0.0h);
  var hi = vec4<f16>(0.0h);
  if (FORMAT == 0u) {
    lo = vec4<f16>(bitcast<vec4<f32>>(raw.a));
    hi = vec4<f16>(bitcast<vec4<f32>>(raw.b));
  } else if (FORMAT == 1u) {
    let q = raw.a;
    lo = vec4<f16>(vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u)));
    hi = vec4<f16>(vec4<f32>(bitcast<f32>(q.z << 16u), bitcast<f32>(q.z & 0xffff0000u), bitcast<f32>(q.w << 16u), bitcast<f32>(q.w & 0xffff0000u)));
  } else {
    let s = f16(bitcast<f32>(raw.a.y));
    let word = raw.a.x;
    lo = vec4<f16>(nf4lut[(word >> 4u) & 15u], nf4lut[word & 15u], nf4lut[(word >> 12u) & 15u], nf4lut[(word >> 8u) & 15u]) * s;
    hi = vec4<f16>(nf4lut[(word >> 20u) & 15u], nf4lut[(word >> 16u) & 15u], nf4lut[(word >> 28u) & 15u], nf4lut[(word >> 24u) & 15u]) * s;
  }
  tiles[wAt(r, c)] = lo.x;
  tiles[wAt(r, c + 1u)] = lo.y;
  tiles[wAt(r, c + 2u)] = lo.z;
  tiles[wAt(r, c + 3u)] = lo.w;
  tiles[wAt(r, c + 4u)] = hi.x;
  tiles[wAt(r, c + 5u)] = hi.y;
  tiles[wAt(r, c + 6u)] = hi.z;
  tiles[wAt(r, c + 7u)] = hi.w;
}

// One invocation's staging items of one K step with the straight-line staging: X items
// li + q·THREADS (x_q) and W items (w_q), named variables used under override guards (at most 8 of
// each, so they compile to straight-line code as in the probe's generated shader and stay in
// registers — with PREFETCH across the step's multiply-accumulates).
struct Staged {
  x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>, x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
  w0: WItem, w1: WItem, w2: WItem, w3: WItem, w4: WItem, w5: WItem, w6: WItem, w7: WItem,
}

// The global loads of the K step at k0.
fn loadStep(li: u32, m0: u32, n0: u32, k0: u32) -> Staged {
  var s = Staged();
  s.x0 = loadX(li, m0, k0);
  if (NX > 1u) { s.x1 = loadX(li + THREADS, m0, k0); }
  if (NX > 2u) { s.x2 = loadX(li + 2u * THREADS, m0, k0); }
  if (NX > 3u) { s.x3 = loadX(li + 3u * THREADS, m0, k0); }
  if (NX > 4u) { s.x4 = loadX(li + 4u * THREADS, m0, k0); }
  if (NX > 5u) { s.x5 = loadX(li + 5u * THREADS, m0, k0); }
  if (NX > 6u) { s.x6 = loadX(li + 6u * THREADS, m0, k0); }
  if (NX > 7u) { s.x7 = loadX(li + 7u * THREADS, m0, k0); }
  s.w0 = loadW(li, n0, k0);
  if (NW > 1u) { s.w1 = loadW(li + THREADS, n0, k0); }
  if (NW > 2u) { s.w2 = loadW(li + 2u * THREADS, n0, k0); }
  if (NW > 3u) { s.w3 = loadW(li + 3u * THREADS, n0, k0); }
  if (NW > 4u) { s.w4 = loadW(li + 4u * THREADS, n0, k0); }
  if (NW > 5u) { s.w5 = loadW(li + 5u * THREADS, n0, k0); }
  if (NW > 6u) { s.w6 = loadW(li + 6u * THREADS, n0, k0); }
  if (NW > 7u) { s.w7 = loadW(li + 7u * THREADS, n0, k0); }
  return s;
}

// Converts and writes a step's items into the tiles, the X items' row scales xs from registers.
fn storeStep(li: u32, s: Staged, xs: array<f32, 8>) {
  storeX(li, s.x0, xs[0]);
  if (NX > 1u) { storeX(li + THREADS, s.x1, xs[1]); }
  if (NX > 2u) { storeX(li + 2u * THREADS, s.x2, xs[2]); }
  if (NX > 3u) { storeX(li + 3u * THREADS, s.x3, xs[3]); }
  if (NX > 4u) { storeX(li + 4u * THREADS, s.x4, xs[4]); }
  if (NX > 5u) { storeX(li + 5u * THREADS, s.x5, xs[5]); }
  if (NX > 6u) { storeX(li + 6u * THREADS, s.x6, xs[6]); }
  if (NX > 7u) { storeX(li + 7u * THREADS, s.x7, xs[7]); }
  storeW(li, s.w0);
  if (NW > 1u) { storeW(li + THREADS, s.w1); }
  if (NW > 2u) { storeW(li + 2u * THREADS, s.w2); }
  if (NW > 3u) { storeW(li + 3u * THREADS, s.w3); }
  if (NW > 4u) { storeW(li + 4u * THREADS, s.w4); }
  if (NW > 5u) { storeW(li + 5u * THREADS, s.w5); }
  if (NW > 6u) { storeW(li + 6u * THREADS, s.w6); }
  if (NW > 7u) { storeW(li + 7u * THREADS, s.w7); }
}

// The strided-loop staging of the K step at k0 (UNROLL false, the first version: about half the
// probe's speed), row scales read from workgroup memory.
fn stageLoop(li: u32, m0: u32, n0: u32, k0: u32) {
  for (var i = li; i < X_ITEMS; i += THREADS) {
    storeX(i, loadX(i, m0, k0), itemScale(i));
  }
  for (var i = li; i < W_ITEMS; i += THREADS) {
    storeW(i, loadW(i, n0, k0));
  }
}

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

// Whether the LoRA term runs on the tensor cores: R ≤ BK (uniform: params.r).
fn loraOnTensorCores() -> bool {
  return LORA && params.r <= BK;
}

// The LoRA term's operands for the tensor cores, in place of the X and W tiles: tile row i < BM
// holds U[m0 + i] and the W tile's row j holds L[n0 + j], each as f16(value · 2^e) with the row's
// own scale (scaleFor of its largest |value|; rows past M or N and ranks past R are zeros, R padded
// to a multiple of 16); the inverse scales go to rowS (U) and colInv (L). One row per invocation,
// its R ≤ BK values read twice (the maximum, then the staging).
fn stageLora(li: u32, m0: u32, n0: u32) {
  let r = params.r;
  let rp = (r + 15u) / 16u * 16u;
  for (var t = li; t < BM + BN; t += THREADS) {
    let isU = t < BM;
    var src = 0u;
    var live = false;
    var dst = 0u;
    if (isU) {
      src = (m0 + t) * r;
      live = m0 + t < params.m;
      dst = t * SK;
    } else {
      src = (n0 + t - BM) * r;
      live = n0 + t - BM < params.n;
      dst = t - BM; // the W tile's row (wAt)
    }
    var amax = 0u;
    if (live) {
      for (var q = 0u; q < r; q++) {
        var v = 0.0;
        if (isU) { v = u[src + q]; } else { v = lora_b[src + q]; }
        amax = max(amax, bitcast<u32>(v) & 0x7fffffffu);
      }
    }
    let sc = scaleFor(amax);
    for (var q = 0u; q < rp; q++) {
      var v = 0.0;
      if (live && q < r) {
        if (isU) { v = u[src + q]; } else { v = lora_b[src + q]; }
      }
      if (isU) {
        tiles[dst + q] = f16(v * sc);
      } else {
        tiles[wAt(dst, q)] = f16(v * sc);
      }
    }
    if (isU) {
      rowS[t] = 1.0 / sc;
    } else {
      colInv[t - BM] = 1.0 / sc;
    }
  }
}

// Writes fragment (i, j) of subgroup sg (column sn of the subgroup grid), whose first tile row and
// Y column are rowT, colF: through the subgroup's scratch; lane `lane` writes column
// colF + 16j + lane % 16 of tile rows rowT + 16i + lane / 16 + 2q (q < 8): acc / s
// [+ scale · U[row]·L[col]] [+ Y's old value], the elements inside Y only. With the LoRA term on
// the tensor cores the tiles hold stageLora's operands and the term passes through the scratch first.
fn storeFrag(acc: Frag, sg: u32, sn: u32, lane: u32, m0: u32, n0: u32, rowT: u32, colF: u32, i: u32, j: u32) {
  let c = lane % 16u;
  let col = colF + 16u * j + c;
  let r0 = rowT + 16u * i + lane / 16u; // tile row of the lane's element q = 0
  var lora: array<f32, 8>; // U[row]·L[col] of the lane's 8 elements
  if (loraOnTensorCores()) {
    var lf = Frag();
    for (var kk = 0u; kk < params.r; kk += 16u) {
      let a = subgroupMatrixLoad<Left>(&tiles, (rowT + 16u * i) * SK + kk, false, SK);
      lf = subgroupMatrixMultiplyAccumulate(a, loadRight(sn, j, kk), lf);
    }
    subgroupMatrixStore(&scratch, sg * 256u, lf, false, 16u);
    workgroupBarrier();
    let cInv = colInv[col - n0];
    for (var q = 0u; q < 8u; q++) {
      lora[q] = scratch[sg * 256u + (lane / 16u + 2u * q) * 16u + c] * rowS[r0 + 2u * q] * cInv;
    }
    workgroupBarrier();
  }
  subgroupMatrixStore(&scratch, sg * 256u, acc, false, 16u);
  workgroupBarrier();
  if (LORA && !loraOnTensorCores()) {
    let colL = min(col, params.n - 1u); // columns past N (not written) read row N - 1
    if (params.r % 4u == 0u) {
      // four of R per load (the epilogue is load-bound: 9 loads per 8 FMAs in the scalar loop)
      let r4 = params.r / 4u;
      for (var t = 0u; t < r4; t++) {
        let b = lora_b4[colL * r4 + t];
        for (var q = 0u; q < 8u; q++) {
          let row = min(m0 + r0 + 2u * q, params.m - 1u);
          lora[q] += dot(u4[row * r4 + t], b);
        }
      }
    } else {
      for (var t = 0u; t < params.r; t++) {
        let b = lora_b[colL * params.r + t];
        for (var q = 0u; q < 8u; q++) {
          let row = min(m0 + r0 + 2u * q, params.m - 1u);
          lora[q] += u[row * params.r + t] * b;
        }
      }
    }
  }
  for (var q = 0u; q < 8u; q++) {
    let rt = r0 + 2u * q;
    let row = m0 + rt;
    if (row < params.m && col < params.n) {
      let o = row * params.n + col;
      var v = scratch[sg * 256u + (lane / 16u + 2u * q) * 16u + c] * rowInv[rt];
      if (LORA) {
        v += params.scale * lora[q];
      }
      if (ACCUMULATE) {
        v += y[o];
      }
      y[o] = v;
    }
  }
  workgroupBarrier();
}

// Right fragment j of this subgroup at reduction offset kk.
fn loadRight(sn: u32, j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&tiles, B_OFFSET + (sn * FN * 16u + j * 16u) * SK + kk, true, SK);
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let n0 = wg.x * BN;
  let m0 = wg.y * BM;
  let sg = li / 32u;
  let lane = li % 32u;
  let sm = sg / SG_N;
  let sn = sg % SG_N;
  if (li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = f16(bitcast<f32>(codebook[li]));
  }
  for (var i = li; i < BM; i += THREADS) {
    var s = 1.0;
    if (m0 + i < params.m) {
      s = row_scale[m0 + i];
    }
    rowS[i] = s;
    rowInv[i] = 1.0 / s;
  }
  let rowT = sm * FM * 16u; // first tile row of this subgroup's fragments
  let colF = n0 + sn * FN * 16u;

  var acc00 = Frag(); var acc01 = Frag(); var acc02 = Frag(); var acc03 = Frag(); var acc04 = Frag(); var acc05 = Frag(); var acc06 = Frag(); var acc07 = Frag();
  var acc10 = Frag(); var acc11 = Frag(); var acc12 = Frag(); var acc13 = Frag(); var acc14 = Frag(); var acc15 = Frag(); var acc16 = Frag(); var acc17 = Frag();
  workgroupBarrier();
  let xs = array<f32, 8>(itemScale(li), itemScale(li + THREADS), itemScale(li + 2u * THREADS), itemScale(li + 3u * THREADS),
                         itemScale(li + 4u * THREADS), itemScale(li + 5u * THREADS), itemScale(li + 6u * THREADS), itemScale(li + 7u * THREADS));

  let steps = params.k / BK;
  // this invocation's staging items of the step about to be staged, loaded and still encoded
  var staged = Staged();
  if (PREFETCH) {
    staged = loadStep(li, m0, n0, 0u);
  }
  for (var t = 0u; t < steps; t++) {
    let k0 = t * BK;
    if (!UNROLL) {
      stageLoop(li, m0, n0, k0);
    } else {
      if (!PREFETCH) {
        staged = loadStep(li, m0, n0, k0);
      }
      storeStep(li, staged, xs);
    }
    workgroupBarrier();
    // with PREFETCH the next step's global loads are in flight during this step's arithmetic
    if (PREFETCH && t + 1u < steps) {
      staged = loadStep(li, m0, n0, k0 + BK);
    }
    for (var kk = 0u; kk < BK; kk += 16u) {
      let aRow = rowT * SK + kk;
      let a0 = subgroupMatrixLoad<Left>(&tiles, aRow, false, SK);
      var a1 = Left();
      if (FM > 1u) { a1 = subgroupMatrixLoad<Left>(&tiles, aRow + 16u * SK, false, SK); }
      { let b = loadRight(sn, 0u, kk); acc00 = subgroupMatrixMultiplyAccumulate(a0, b, acc00); if (FM > 1u) { acc10 = subgroupMatrixMultiplyAccumulate(a1, b, acc10); } }
      if (FN > 1u) { let b = loadRight(sn, 1u, kk); acc01 = subgroupMatrixMultiplyAccumulate(a0, b, acc01); if (FM > 1u) { acc11 = subgroupMatrixMultiplyAccumulate(a1, b, acc11); } }
      if (FN > 2u) { let b = loadRight(sn, 2u, kk); acc02 = subgroupMatrixMultiplyAccumulate(a0, b, acc02); if (FM > 1u) { acc12 = subgroupMatrixMultiplyAccumulate(a1, b, acc12); } }
      if (FN > 3u) { let b = loadRight(sn, 3u, kk); acc03 = subgroupMatrixMultiplyAccumulate(a0, b, acc03); if (FM > 1u) { acc13 = subgroupMatrixMultiplyAccumulate(a1, b, acc13); } }
      if (FN > 4u) { let b = loadRight(sn, 4u, kk); acc04 = subgroupMatrixMultiplyAccumulate(a0, b, acc04); if (FM > 1u) { acc14 = subgroupMatrixMultiplyAccumulate(a1, b, acc14); } }
      if (FN > 5u) { let b = loadRight(sn, 5u, kk); acc05 = subgroupMatrixMultiplyAccumulate(a0, b, acc05); if (FM > 1u) { acc15 = subgroupMatrixMultiplyAccumulate(a1, b, acc15); } }
      if (FN > 6u) { let b = loadRight(sn, 6u, kk); acc06 = subgroupMatrixMultiplyAccumulate(a0, b, acc06); if (FM > 1u) { acc16 = subgroupMatrixMultiplyAccumulate(a1, b, acc16); } }
      if (FN > 7u) { let b = loadRight(sn, 7u, kk); acc07 = subgroupMatrixMultiplyAccumulate(a0, b, acc07); if (FM > 1u) { acc17 = subgroupMatrixMultiplyAccumulate(a1, b, acc17); } }
    }
    workgroupBarrier();
  }
  if (loraOnTensorCores()) {
    stageLora(li, m0, n0);
    workgroupBarrier();
  }

  storeFrag(acc00, sg, sn, lane, m0, n0, rowT, colF, 0u, 0u);
  if (FN > 1u) { storeFrag(acc01, sg, sn, lane, m0, n0, rowT, colF, 0u, 1u); }
  if (FN > 2u) { storeFrag(acc02, sg, sn, lane, m0, n0, rowT, colF, 0u, 2u); }
  if (FN > 3u) { storeFrag(acc03, sg, sn, lane, m0, n0, rowT, colF, 0u, 3u); }
  if (FN > 4u) { storeFrag(acc04, sg, sn, lane, m0, n0, rowT, colF, 0u, 4u); }
  if (FN > 5u) { storeFrag(acc05, sg, sn, lane, m0, n0, rowT, colF, 0u, 5u); }
  if (FN > 6u) { storeFrag(acc06, sg, sn, lane, m0, n0, rowT, colF, 0u, 6u); }
  if (FN > 7u) { storeFrag(acc07, sg, sn, lane, m0, n0, rowT, colF, 0u, 7u); }
  if (FM > 1u) {
    storeFrag(acc10, sg, sn, lane, m0, n0, rowT, colF, 1u, 0u);
    if (FN > 1u) { storeFrag(acc11, sg, sn, lane, m0, n0, rowT, colF, 1u, 1u); }
    if (FN > 2u) { storeFrag(acc12, sg, sn, lane, m0, n0, rowT, colF, 1u, 2u); }
    if (FN > 3u) { storeFrag(acc13, sg, sn, lane, m0, n0, rowT, colF, 1u, 3u); }
    if (FN > 4u) { storeFrag(acc14, sg, sn, lane, m0, n0, rowT, colF, 1u, 4u); }
    if (FN > 5u) { storeFrag(acc15, sg, sn, lane, m0, n0, rowT, colF, 1u, 5u); }
    if (FN > 6u) { storeFrag(acc16, sg, sn, lane, m0, n0, rowT, colF, 1u, 6u); }
    if (FN > 7u) { storeFrag(acc17, sg, sn, lane, m0, n0, rowT, colF, 1u, 7u); }
  }
}
