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
// BN = WG_N·TN. Saves nothing (the backward pass needs X, which its caller keeps).
//
// Tiling: each workgroup owns a BM × BN tile of Y; the reduction walks K (then R) in steps of BK.
// Every step, each thread loads QA quads (4 consecutive k of one row) of the X tile and QB quads of
// the W tile from global memory into registers (the next step's, while this step computes),
// dequantises the W quads, and stores both tiles k-major into workgroup memory (double-buffered:
// one barrier per step). Thread (tx, ty) accumulates TM × TN outputs in registers: rows
// g·4·WG_M + 4·ty + i and columns g·4·WG_N + 4·tx + j, so its operands are whole vec4s of the
// k-major tiles and 16 neighbouring threads read 16 consecutive vec4s. The vec4 slot index of a
// tile row is XOR-swizzled by (k / 4)·(32 / BK) mod 8 so that the transposing stores hit 32
// different banks; reads apply the same swizzle.

override WG_M: u32 = 16u;
override WG_N: u32 = 16u;
override TM: u32 = 8u;  // 4 or 8
override TN: u32 = 8u;  // 4 or 8
override BK: u32 = 16u; // 8, 16 or 32
override FORMAT: u32 = 0u;
override ACCUMULATE: bool = false;
override LORA: bool = false;

override BM: u32 = WG_M * TM;
override BN: u32 = WG_N * TN;
override THREADS: u32 = WG_M * WG_N;
override QA: u32 = BM * BK / (4u * THREADS); // ≤ 4
override QB: u32 = BN * BK / (4u * THREADS); // ≤ 4
override SWIZZLE: u32 = 32u / BK;
override TILE_A: u32 = 2u * BK * BM;
override TILE_B: u32 = 2u * BK * BN;

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

// [buffer][k][slot ^ swizzle][4]: k-major tiles, a slot is 4 consecutive rows (or columns)
var<workgroup> tileA: array<f32, TILE_A>;
var<workgroup> tileB: array<f32, TILE_B>;
var<workgroup> nf4lut: array<f32, 16>;

// bitsandbytes' NF4 codebook as f32 bit patterns (index = 4-bit code).
const NF4_CODEBOOK = array<u32, 16>(
  0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
  0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u,
);

// Quad q of a tile: row q / (BK / 4), reduction offset 4·(q % (BK / 4)).
fn quadRow(q: u32) -> u32 {
  return q / (BK / 4u);
}
fn quadK(q: u32) -> u32 {
  return 4u * (q % (BK / 4u));
}

// X[row, k..k+3] (zeros past the edges).
fn loadX(row: u32, k: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (row >= params.m) {
    return v;
  }
  let base = row * params.k + k;
  if (k + 3u < params.k) {
    return vec4<f32>(x[base], x[base + 1u], x[base + 2u], x[base + 3u]);
  }
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = x[base + i];
    }
  }
  return v;
}

// scale · U[row, r..r+3] (zeros past the edges).
fn loadU(row: u32, r: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (row < params.m) {
    for (var i = 0u; i < 4u; i++) {
      if (r + i < params.r) {
        v[i] = params.scale * u[row * params.r + r + i];
      }
    }
  }
  return v;
}

// L[row, r..r+3] as f32 bits (zeros past the edges).
fn loadL(row: u32, r: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (row < params.n) {
    for (var i = 0u; i < 4u; i++) {
      if (r + i < params.r) {
        v[i] = bitcast<u32>(lora_b[row * params.r + r + i]);
      }
    }
  }
  return v;
}

// Scale of NF4 block b (FORMAT 2: stored f32; FORMAT 3: map[code] · absmax2 + offset).
fn blockScale(b: u32) -> f32 {
  if (FORMAT == 3u) {
    let code = (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu;
    return qmap[code] * absmax2[b >> 8u] + params.offset;
  }
  return bitcast<f32>(absmax[b]);
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
  let code = (w[e >> 3u] >> (8u * ((e >> 1u) & 3u) + 4u * (1u - (e & 1u)))) & 15u;
  return nf4lut[code] * blockScale(e >> 6u);
}

// W[row, k..k+3], still encoded when K % 4 == 0 (decoded in decodeW after this step's compute):
//   f32: the 4 words; bf16: the 2 words in .xy; nf4: .x the word, .y the block index, .z = 1 if
//   the quad is inside W, .w which half of the word (elements 4h..4h+3) it is.
// When K % 4 != 0 it is decoded here, as f32 bits.
fn loadW(row: u32, k: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (row >= params.n || k >= params.k) {
    return v;
  }
  let e = row * params.k + k;
  if (params.k % 4u == 0u) {
    if (FORMAT == 0u) {
      return vec4<u32>(w[e], w[e + 1u], w[e + 2u], w[e + 3u]);
    }
    if (FORMAT == 1u) {
      return vec4<u32>(w[e >> 1u], w[(e >> 1u) + 1u], 0u, 0u);
    }
    return vec4<u32>(w[e >> 3u], e >> 6u, 1u, (e >> 2u) & 1u);
  }
  for (var i = 0u; i < 4u; i++) {
    if (k + i < params.k) {
      v[i] = bitcast<u32>(weightAt(e + i));
    }
  }
  return v;
}

fn decodeW(raw: vec4<u32>, plain: bool) -> vec4<f32> {
  if (plain || FORMAT == 0u || params.k % 4u != 0u) {
    return bitcast<vec4<f32>>(raw);
  }
  if (FORMAT == 1u) {
    return vec4<f32>(
      bitcast<f32>(raw.x << 16u),
      bitcast<f32>(raw.x & 0xffff0000u),
      bitcast<f32>(raw.y << 16u),
      bitcast<f32>(raw.y & 0xffff0000u),
    );
  }
  if (raw.z == 0u) {
    return vec4<f32>(0.0);
  }
  let bytes = raw.x >> (16u * raw.w); // byte 0: elements 4h (high), 4h+1 (low); byte 1: 4h+2, 4h+3
  let a = blockScale(raw.y);
  return a * vec4<f32>(
    nf4lut[(bytes >> 4u) & 15u],
    nf4lut[bytes & 15u],
    nf4lut[(bytes >> 12u) & 15u],
    nf4lut[(bytes >> 8u) & 15u],
  );
}

// Workgroup-memory index of element (row, kk) of a k-major tile of `rows` rows in buffer `buf`.
fn tileIndex(buf: u32, rows: u32, row: u32, kk: u32) -> u32 {
  let slot = (row >> 2u) ^ (((kk >> 2u) * SWIZZLE) & 7u);
  return ((buf * BK + kk) * (rows >> 2u) + slot) * 4u + (row & 3u);
}

@compute @workgroup_size(WG_N, WG_M)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(local_invocation_id) lid: vec3<u32>,
  @builtin(local_invocation_index) li: u32,
) {
  let m0 = wg.x * BM;
  let n0 = wg.y * BN;
  let tx = lid.x;
  let ty = lid.y;
  if (FORMAT >= 2u && li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = bitcast<f32>(codebook[li]);
  }
  workgroupBarrier();

  let kTiles = (params.k + BK - 1u) / BK;
  var steps = kTiles;
  if (LORA) {
    steps += (params.r + BK - 1u) / BK;
  }

  var acc: array<vec4<f32>, 16>; // [i][g]: row i of the thread, column group g (TM × TN / 4 used)
  var ra: array<vec4<f32>, 4>;   // X quads of the step being loaded
  var rb: array<vec4<u32>, 4>;   // W quads of the step being loaded, still encoded

  // step 0: load and store into buffer 0
  for (var p = 0u; p < QA; p++) {
    let q = li + p * THREADS;
    ra[p] = loadX(m0 + quadRow(q), quadK(q));
  }
  for (var p = 0u; p < QB; p++) {
    let q = li + p * THREADS;
    rb[p] = loadW(n0 + quadRow(q), quadK(q));
  }
  for (var p = 0u; p < QA; p++) {
    let q = li + p * THREADS;
    for (var i = 0u; i < 4u; i++) {
      tileA[tileIndex(0u, BM, quadRow(q), quadK(q) + i)] = ra[p][i];
    }
  }
  for (var p = 0u; p < QB; p++) {
    let q = li + p * THREADS;
    let v = decodeW(rb[p], false);
    for (var i = 0u; i < 4u; i++) {
      tileB[tileIndex(0u, BN, quadRow(q), quadK(q) + i)] = v[i];
    }
  }
  workgroupBarrier();

  for (var t = 0u; t < steps; t++) {
    let buf = t & 1u;
    let next = t + 1u;
    let more = next < steps;
    let nextLora = next >= kTiles;
    // issue the next step's global loads before computing this one
    if (more) {
      let k0 = select(next * BK, (next - kTiles) * BK, nextLora);
      for (var p = 0u; p < QA; p++) {
        let q = li + p * THREADS;
        if (LORA && nextLora) {
          ra[p] = loadU(m0 + quadRow(q), k0 + quadK(q));
        } else {
          ra[p] = loadX(m0 + quadRow(q), k0 + quadK(q));
        }
      }
      for (var p = 0u; p < QB; p++) {
        let q = li + p * THREADS;
        if (LORA && nextLora) {
          rb[p] = loadL(n0 + quadRow(q), k0 + quadK(q));
        } else {
          rb[p] = loadW(n0 + quadRow(q), k0 + quadK(q));
        }
      }
    }

    for (var kk = 0u; kk < BK; kk++) {
      let sw = ((kk >> 2u) * SWIZZLE) & 7u;
      let rowA = ((buf * BK + kk) * (BM >> 2u)) * 4u;
      let rowB = ((buf * BK + kk) * (BN >> 2u)) * 4u;
      var b: array<vec4<f32>, 2>;
      for (var g = 0u; g < TN / 4u; g++) {
        let o = rowB + (((g * WG_N + tx) ^ sw) * 4u);
        b[g] = vec4<f32>(tileB[o], tileB[o + 1u], tileB[o + 2u], tileB[o + 3u]);
      }
      for (var g = 0u; g < TM / 4u; g++) {
        let o = rowA + (((g * WG_M + ty) ^ sw) * 4u);
        let a = vec4<f32>(tileA[o], tileA[o + 1u], tileA[o + 2u], tileA[o + 3u]);
        for (var i = 0u; i < 4u; i++) {
          for (var h = 0u; h < TN / 4u; h++) {
            acc[(g * 4u + i) * 2u + h] += a[i] * b[h];
          }
        }
      }
    }

    if (more) {
      let nb = buf ^ 1u;
      for (var p = 0u; p < QA; p++) {
        let q = li + p * THREADS;
        for (var i = 0u; i < 4u; i++) {
          tileA[tileIndex(nb, BM, quadRow(q), quadK(q) + i)] = ra[p][i];
        }
      }
      for (var p = 0u; p < QB; p++) {
        let q = li + p * THREADS;
        let v = decodeW(rb[p], nextLora);
        for (var i = 0u; i < 4u; i++) {
          tileB[tileIndex(nb, BN, quadRow(q), quadK(q) + i)] = v[i];
        }
      }
    }
    workgroupBarrier();
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
