// Dequant-matmul forward:  Y (M, N) f32  =  [Y +] X (M, K) · dequant(W)ᵀ  [+ scale · U (M, R) · Lᵀ]
// W is the PyTorch (N, K) weight in the format FORMAT picks (0 f32, 1 bf16x2, 2 nf4x8 with f32
// block scales, 3 nf4x8 with double-quantised scales); L is the (N, R) f32 LoRA B matrix and U the
// LoRA down-projection X·Aᵀ already computed. ACCUMULATE adds into Y (the residual stream).
// The LoRA term runs as R extra columns of the reduction: Y = [X | scale·U] · [W | L]ᵀ.
//
// Bindings (group 0):
//   0 params   uniform    MatmulParams { m, n, k, r, scale, offset }   r, scale for LORA; offset for FORMAT 3
//   1 y        read_write (M, N) f32
//   2 x        read       (M, K) f32
//   3 w        read       (N, K) weight words: f32 bits | bf16x2 | nf4x8 (8 codes a word, element
//                         8i+2j in the high nibble of byte j; blocks of 64 over the flattened weight)
//   4 absmax   read       FORMAT 2: (N·K / 64) f32 bits; FORMAT 3: (N·K / 64) u8x4 codes; else unused
//   5 absmax2  read       FORMAT 3: (ceil(N·K / 64 / 256)) f32; else unused
//   6 qmap     read       FORMAT 3: (256) f32 bitsandbytes' signed dynamic map; else unused
//   7 u        read       LORA: (M, R) f32; else unused
//   8 lora_b   read       LORA: (N, R) f32; else unused
// Dispatch: (ceil(M / BM), ceil(N / BN)) workgroups of (WG_N, WG_M) threads, BM = WG_M·TM and
// BN = WG_N·TN; WG_N·WG_M a multiple of 32. Saves nothing (the backward needs X, which its caller keeps).
//
// Tiling: each workgroup owns a BM × BN tile of Y; the reduction walks K (then R) in steps of BK.
// Tiles live k-major in workgroup memory as vec4 "slots" (4 consecutive rows at one k), double
// buffered. Every thread holds in registers 4 consecutive rows × KA consecutive k of the X tile and
// 4 rows × KB k of the W tile (W still encoded). Each step it stores what it loaded during the
// previous one (dequantising W: NF4 codebook and dynamic map from tables in workgroup memory) as
// KA + KB whole slots, passes the step's one barrier, issues the global loads of the next step,
// then runs this step's arithmetic while those loads are in flight. Thread (tx, ty) accumulates
// TM × TN outputs: rows g·4·WG_M + 4·ty + i and columns g·4·WG_N + 4·tx + j, so each operand is
// one slot read, and 16 neighbouring threads read 16 different slots. Slot s at reduction index k
// is stored at s ^ ((k / KA) mod 8) (KB for W): the 8 threads of a store phase hold 8 different k
// and so hit 8 different 16-byte bank groups; reads apply the same XOR.
// On an H100 the 128 × 128 tile with BK = 8 (8 × 8 per thread) is the fastest: wider steps or more
// k per thread cost registers, and below ~128 registers two 256-thread workgroups fit an SM.

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TM: u32 = 8u;  // 4 or 8
override TN: u32 = 8u;  // 4 or 8
override BK: u32 = 16u; // 8, 16 or 32
override FORMAT: u32 = 0u;
override ACCUMULATE: bool = false;
override LORA: bool = false;
// threads along N within each group of 32 consecutive invocations (a warp on NVIDIA): 16 gives
// warps of 16 × 2 threads, 8 gives 8 × 4 (fewer distinct tile slots read per warp)
override WARP_N: u32 = 16u;

override BM: u32 = WG_M * TM;
override BN: u32 = WG_N * TN;
override THREADS: u32 = WG_M * WG_N;
override KA: u32 = BM * BK / (4u * THREADS); // k per thread per step in the X tile: 1, 2 or 4
override KB: u32 = BN * BK / (4u * THREADS); // the same for the W tile
override SLOTS_A: u32 = 2u * BK * BM / 4u;
override SLOTS_B: u32 = 2u * BK * BN / 4u;

struct MatmulParams {
  m: u32,
  n: u32,
  k: u32,
  r: u32,
  scale: f32,
  offset: f32,
}

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> absmax: array<u32>;
@group(0) @binding(5) var<storage, read> absmax2: array<f32>;
@group(0) @binding(6) var<storage, read> qmap: array<f32>;
@group(0) @binding(7) var<storage, read> u: array<f32>;
@group(0) @binding(8) var<storage, read> lora_b: array<f32>;

// [buffer][k][slot ^ swizzle], a slot = 4 consecutive rows (X tile) or columns (W tile)
var<workgroup> tileA: array<vec4<f32>, SLOTS_A>;
var<workgroup> tileB: array<vec4<f32>, SLOTS_B>;
var<workgroup> nf4lut: array<f32, 16>;
// the dynamic map of double-quantised scales, copied from qmap (FORMAT 3 only)
override QMAP_SIZE: u32 = select(1u, 256u, FORMAT == 3u);
var<workgroup> qlut: array<f32, QMAP_SIZE>;

// #include "lib/nf4_codebook.wgsl"

// X[row, k .. k+KA-1] in the first KA lanes (zeros past the edges).
fn loadX(row: u32, k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (row < params.m) {
    let base = row * params.k + k;
    for (var j = 0u; j < KA; j++) {
      if (k + j < params.k) {
        v[j] = x[base + j];
      }
    }
  }
  return v;
}

// scale · U[row, r .. r+KA-1] (zeros past the edges).
fn loadU(row: u32, r: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (row < params.m) {
    for (var j = 0u; j < KA; j++) {
      if (r + j < params.r) {
        v[j] = params.scale * u[row * params.r + r + j];
      }
    }
  }
  return v;
}

// L[row, r .. r+KB-1] as f32 bits (zeros past the edges).
fn loadL(row: u32, r: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (row < params.n) {
    for (var j = 0u; j < KB; j++) {
      if (r + j < params.r) {
        v[j] = bitcast<u32>(lora_b[row * params.r + r + j]);
      }
    }
  }
  return v;
}

// #include "lib/nf4_block_scale.wgsl"

// NF4 code of element e (flattened) within its word: byte (e & 7) / 2, high nibble when e is even.
fn nf4Nibble(word: u32, e: u32) -> u32 {
  return (word >> (8u * ((e & 7u) >> 1u) + 4u * (1u - (e & 1u)))) & 15u;
}

// One element W[e] (flattened index) decoded to f32: the general path for K % 4 != 0.
fn weightAt(e: u32) -> f32 {
  if (FORMAT == 0u) {
    return bitcast<f32>(w[e]);
  }
  if (FORMAT == 1u) {
    let word = w[e >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
  }
  return nf4lut[nf4Nibble(w[e >> 3u], e)] * blockScale(e >> 6u);
}

// W[row, k .. k+KB-1], still encoded when K % 4 == 0 (decodeW runs after this step's arithmetic,
// so only what it cannot recompute from (row, k) is held in registers):
//   f32: the KB words; bf16: .x (and .y when KB = 4) the words holding them;
//   nf4: .x the word holding them, .y the block scale's f32 bits;
//   nf4 double-quantised: .x the word, .y the scale's code (the chunk scale is read in decodeW:
//   one f32 per 16384 elements, always in cache).
// When K % 4 != 0 the elements are decoded here, as f32 bits. Zeros past the edges.
fn loadW(row: u32, k: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (row >= params.n || k >= params.k) {
    return v;
  }
  let e = row * params.k + k;
  if (params.k % 4u == 0u) {
    // k is a multiple of KB, so the KB elements share one NF4 word and block (and bf16 words)
    if (FORMAT == 0u) {
      for (var j = 0u; j < KB; j++) {
        v[j] = w[e + j];
      }
    } else if (FORMAT == 1u) {
      v.x = w[e >> 1u];
      if (KB == 4u) {
        v.y = w[(e >> 1u) + 1u];
      }
    } else if (FORMAT == 2u) {
      v = vec4<u32>(w[e >> 3u], absmax[e >> 6u], 0u, 0u);
    } else {
      let b = e >> 6u;
      v = vec4<u32>(w[e >> 3u], (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu, 0u, 0u);
    }
    return v;
  }
  for (var j = 0u; j < KB; j++) {
    if (k + j < params.k) {
      v[j] = bitcast<u32>(weightAt(e + j));
    }
  }
  return v;
}

// The KB values that loadW fetched for W[row, k ..], as f32 (`plain`: already f32 bits, as for
// the LoRA B rows and when K % 4 != 0).
fn decodeW(raw: vec4<u32>, row: u32, k: u32, plain: bool) -> vec4<f32> {
  if (plain || FORMAT == 0u || params.k % 4u != 0u) {
    return bitcast<vec4<f32>>(raw);
  }
  if (FORMAT == 1u) {
    if (KB == 1u) {
      // row·K is even, so element e is in the high half exactly when k is odd
      return vec4<f32>(bitcast<f32>(select(raw.x << 16u, raw.x & 0xffff0000u, (k & 1u) == 1u)), 0.0, 0.0, 0.0);
    }
    return vec4<f32>(
      bitcast<f32>(raw.x << 16u),
      bitcast<f32>(raw.x & 0xffff0000u),
      bitcast<f32>(raw.y << 16u),
      bitcast<f32>(raw.y & 0xffff0000u),
    );
  }
  var v = vec4<f32>(0.0);
  if (row < params.n && k < params.k) {
    let e = row * params.k + k;
    var a = bitcast<f32>(raw.y);
    if (FORMAT == 3u) {
      a = qlut[raw.y] * absmax2[e >> 14u] + params.offset;
    }
    for (var j = 0u; j < KB; j++) {
      v[j] = a * nf4lut[nf4Nibble(raw.x, e + j)];
    }
  }
  return v;
}

@compute @workgroup_size(WG_N, WG_M)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let m0 = wg.x * BM;
  let n0 = wg.y * BN;
  // (tx, ty): this thread's column and row group; each run of 32 invocations covers WARP_N × (32 / WARP_N)
  let lane = li % 32u;
  let warp = li / 32u;
  let tx = (warp % (WG_N / WARP_N)) * WARP_N + lane % WARP_N;
  let ty = (warp / (WG_N / WARP_N)) * (32u / WARP_N) + lane / WARP_N;
  if (FORMAT >= 2u && li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = bitcast<f32>(codebook[li]);
  }
  if (FORMAT == 3u) {
    for (var i = li; i < 256u; i += THREADS) {
      qlut[i] = qmap[i];
    }
  }
  workgroupBarrier();

  // this thread's share of the tile loads: slot rg (rows 4·rg .. 4·rg+3) at k = kg·KA .. kg·KA+KA-1
  let rgA = li / (BK / KA);
  let kgA = li % (BK / KA);
  let rgB = li / (BK / KB);
  let kgB = li % (BK / KB);

  let kTiles = (params.k + BK - 1u) / BK;
  var steps = kTiles;
  if (LORA) {
    steps += (params.r + BK - 1u) / BK;
  }

  var acc: array<vec4<f32>, 16>; // [row i of the thread][column group h]: TM × TN / 4 used
  var ra: array<vec4<f32>, 4>;   // X rows 4·rgA + i of the step being loaded
  var rb: array<vec4<u32>, 4>;   // W rows 4·rgB + i, still encoded

  // step 0's global loads; each step then stores what the previous one loaded, and issues the
  // next step's loads before its arithmetic so that they are in flight meanwhile
  for (var i = 0u; i < 4u; i++) {
    ra[i] = loadX(m0 + 4u * rgA + i, kgA * KA);
    rb[i] = loadW(n0 + 4u * rgB + i, kgB * KB);
  }
  var vb: array<vec4<f32>, 4>;
  for (var t = 0u; t < steps; t++) {
    let buf = t & 1u;
    for (var j = 0u; j < KA; j++) {
      let k = kgA * KA + j;
      tileA[(buf * BK + k) * (BM / 4u) + (rgA ^ ((k / KA) & 7u))] = vec4<f32>(ra[0][j], ra[1][j], ra[2][j], ra[3][j]);
    }
    for (var i = 0u; i < 4u; i++) {
      vb[i] = decodeW(rb[i], n0 + 4u * rgB + i, t * BK + kgB * KB, t >= kTiles);
    }
    for (var j = 0u; j < KB; j++) {
      let k = kgB * KB + j;
      tileB[(buf * BK + k) * (BN / 4u) + (rgB ^ ((k / KB) & 7u))] = vec4<f32>(vb[0][j], vb[1][j], vb[2][j], vb[3][j]);
    }
    // one barrier a step: the other buffer, written next step, was last read before this barrier
    workgroupBarrier();

    let next = t + 1u;
    if (next < steps) {
      let nextLora = next >= kTiles;
      let k0 = select(next * BK, (next - kTiles) * BK, nextLora);
      for (var i = 0u; i < 4u; i++) {
        if (LORA && nextLora) {
          ra[i] = loadU(m0 + 4u * rgA + i, k0 + kgA * KA);
          rb[i] = loadL(n0 + 4u * rgB + i, k0 + kgB * KB);
        } else {
          ra[i] = loadX(m0 + 4u * rgA + i, k0 + kgA * KA);
          rb[i] = loadW(n0 + 4u * rgB + i, k0 + kgB * KB);
        }
      }
    }

    for (var kk = 0u; kk < BK; kk++) {
      let baseA = (buf * BK + kk) * (BM / 4u);
      let baseB = (buf * BK + kk) * (BN / 4u);
      let swA = (kk / KA) & 7u;
      let swB = (kk / KB) & 7u;
      var b: array<vec4<f32>, 2>;
      for (var h = 0u; h < TN / 4u; h++) {
        b[h] = tileB[baseB + ((h * WG_N + tx) ^ swB)];
      }
      for (var g = 0u; g < TM / 4u; g++) {
        let a = tileA[baseA + ((g * WG_M + ty) ^ swA)];
        for (var i = 0u; i < 4u; i++) {
          for (var h = 0u; h < TN / 4u; h++) {
            acc[(g * 4u + i) * 2u + h] += a[i] * b[h];
          }
        }
      }
    }
  }

  for (var g = 0u; g < TM / 4u; g++) {
    for (var i = 0u; i < 4u; i++) {
      let row = m0 + g * 4u * WG_M + 4u * ty + i;
      if (row < params.m) {
        for (var h = 0u; h < TN / 4u; h++) {
          let col = n0 + h * 4u * WG_N + 4u * tx;
          let v = acc[(g * 4u + i) * 2u + h];
          for (var j = 0u; j < 4u; j++) {
            if (col + j < params.n) {
              let o = row * params.n + col + j;
              if (ACCUMULATE) {
                y[o] = y[o] + v[j];
              } else {
                y[o] = v[j];
              }
            }
          }
        }
      }
    }
  }
}
