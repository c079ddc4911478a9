// Dequant matrix-vector product for a few rows (generation's one-token steps):
//   Y (M, N) f32  =  [Y +] X (M, K) · dequant(W)ᵀ  [+ scale · U (M, R) · Lᵀ]      M = ROWS ≤ 8
// the same operation, bindings and weight formats as matmul_forward.wgsl, for M so small that a
// tiled matmul would spend its arithmetic on empty rows: here the cost is reading W once.
// W is the PyTorch (N, K) weight in the format FORMAT picks (0 f32, 1 bf16x2, 2 nf4x8 with f32
// block scales, 3 nf4x8 with double-quantised scales); K must be a multiple of 8, so that every
// 8 consecutive elements of a row are one NF4 word (one block scale), two vec4 of f32 or four
// bf16 pairs. L is the (N, R) f32 LoRA B matrix, U = X·Aᵀ already computed.
//
// Bindings (group 0):
//   0 params   uniform    MatvecParams { m, n, k, r, scale, offset, lanes }   r, scale for LORA; offset for
//                         FORMAT 3; lanes: threads per output column (a power of two ≤ 32)
//   1 y        read_write (M, N) f32
//   2 x        read       (M, K) f32
//   3 w        read       (N, K) weight words: f32 bits | bf16x2 | nf4x8 (element 8i+2j in the high
//                         nibble of byte j of word i; blocks of 64 over the flattened weight)
//   4 absmax   read       FORMAT 2: (N·K / 64) f32 bits; FORMAT 3: (N·K / 64) u8x4 codes; else unused
//   5 absmax2  read       FORMAT 3: (ceil(N·K / 64 / 256)) f32; else unused
//   6 qmap     read       FORMAT 3: (256) f32 bitsandbytes' signed dynamic map; else unused
//   7 u        read       LORA: (M, R) f32; else unused
//   8 lora_b   read       LORA: (N, R) f32; else unused
// Override constants: ROWS = M (1 to 8; fixed per pipeline so that the per-row loops unroll and
// the accumulators stay in registers); WG threads per workgroup; FORMAT, ACCUMULATE, LORA as in
// matmul_forward.wgsl.
// Dispatch: G = ceil(N / (WG / lanes)) workgroups, as (min(G, 65535), ceil(G / 65535)); workgroup
// (x, y) is number y·gx + x.
// Saves nothing.
//
// Work split: the WG threads form teams of `lanes` threads, team t of workgroup g owning column
// n = g·(WG / lanes) + t. Its lanes walk the row's K in groups of 8 elements (lane l takes groups
// l, l + lanes, …: neighbouring lanes read neighbouring words), decode them and accumulate M partial
// dot products; then the LoRA term over R the same way; then the partial sums of each row are
// added in workgroup memory (no reduction when lanes = 1). `lanes` is chosen per weight on the host:
// 32 for wide rows (K ≥ 2048: ≥ 8 groups per lane), fewer for narrow ones, where idle lanes would
// only cost (on a CPU adapter, most of the time).

override ROWS: u32 = 1u;
override FORMAT: u32 = 0u;
override ACCUMULATE: bool = false;
override LORA: bool = false;

const MAXM: u32 = 8u;
override WG: u32 = 256u;

struct MatvecParams {
  m: u32,
  n: u32,
  k: u32,
  r: u32,
  scale: f32,
  offset: f32,
  lanes: u32,
}

@group(0) @binding(0) var<uniform> params: MatvecParams;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> absmax: array<u32>;
@group(0) @binding(5) var<storage, read> absmax2: array<f32>;
@group(0) @binding(6) var<storage, read> qmap: array<f32>;
@group(0) @binding(7) var<storage, read> u: array<f32>;
@group(0) @binding(8) var<storage, read> lora_b: array<f32>;

var<workgroup> nf4lut: array<f32, 16>;
override QMAP_SIZE: u32 = select(1u, 256u, FORMAT == 3u);
var<workgroup> qlut: array<f32, QMAP_SIZE>;
var<workgroup> partial: array<f32, WG * ROWS>;  // [row m][thread]

// #include "lib/nf4_codebook.wgsl"

// Scale of NF4 block b (FORMAT 2: stored f32; FORMAT 3: map[code] · absmax2 + offset).
fn blockScale(b: u32) -> f32 {
  if (FORMAT == 3u) {
    let code = (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu;
    return qlut[code] * absmax2[b >> 8u] + params.offset;
  }
  return bitcast<f32>(absmax[b]);
}

// Elements e .. e+7 of the flattened weight (e a multiple of 8) as two vec4.
fn weight8(e: u32) -> array<vec4<f32>, 2> {
  var out: array<vec4<f32>, 2>;
  if (FORMAT == 0u) {
    for (var h = 0u; h < 2u; h++) {
      let i = e + 4u * h;
      out[h] = vec4<f32>(bitcast<f32>(w[i]), bitcast<f32>(w[i + 1u]), bitcast<f32>(w[i + 2u]), bitcast<f32>(w[i + 3u]));
    }
  } else if (FORMAT == 1u) {
    for (var h = 0u; h < 2u; h++) {
      let a = w[(e >> 1u) + 2u * h];
      let b = w[(e >> 1u) + 2u * h + 1u];
      out[h] = vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
    }
  } else {
    let word = w[e >> 3u];
    let s = blockScale(e >> 6u);
    for (var h = 0u; h < 2u; h++) {
      // bytes 2h and 2h+1: elements 4h (high nibble), 4h+1 (low), 4h+2 (high), 4h+3 (low)
      let b0 = (word >> (16u * h)) & 0xffu;
      let b1 = (word >> (16u * h + 8u)) & 0xffu;
      out[h] = s * vec4<f32>(nf4lut[b0 >> 4u], nf4lut[b0 & 15u], nf4lut[b1 >> 4u], nf4lut[b1 & 15u]);
    }
  }
  return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  if (FORMAT >= 2u && li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = bitcast<f32>(codebook[li]);
  }
  if (FORMAT == 3u) {
    for (var i = li; i < 256u; i += WG) {
      qlut[i] = qmap[i];
    }
  }
  if (FORMAT >= 2u) {
    workgroupBarrier();
  }

  let lanes = params.lanes;
  let team = li / lanes;
  let lane = li % lanes;
  let n = (wg.y * nwg.x + wg.x) * (WG / lanes) + team;
  let K = params.k;
  let K4 = K / 4u;
  var acc: array<f32, MAXM>;
  for (var m = 0u; m < ROWS; m++) {
    acc[m] = 0.0;
  }
  if (n < params.n) {
    let row = n * K;
    for (var k = 8u * lane; k < K; k += 8u * lanes) {
      let wv = weight8(row + k);
      for (var m = 0u; m < ROWS; m++) {
        let x0 = x[m * K4 + k / 4u];
        let x1 = x[m * K4 + k / 4u + 1u];
        acc[m] += dot(x0, wv[0]) + dot(x1, wv[1]);
      }
    }
    if (LORA) {
      let R = params.r;
      for (var r = lane; r < R; r += lanes) {
        let l = lora_b[n * R + r];
        for (var m = 0u; m < ROWS; m++) {
          acc[m] = fma(params.scale * u[m * R + r], l, acc[m]);
        }
      }
    }
  }
  if (lanes == 1u) {
    if (n < params.n) {
      for (var m = 0u; m < ROWS; m++) {
        let at = m * params.n + n;
        if (ACCUMULATE) {
          y[at] = y[at] + acc[m];
        } else {
          y[at] = acc[m];
        }
      }
    }
    return;
  }
  for (var m = 0u; m < ROWS; m++) {
    partial[m * WG + li] = acc[m];
  }
  workgroupBarrier();
  // Tree sum of each team's lanes, for every row at once.
  for (var stride = lanes / 2u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      for (var m = 0u; m < ROWS; m++) {
        partial[m * WG + li] += partial[m * WG + li + stride];
      }
    }
    workgroupBarrier();
  }
  if (n < params.n) {
    for (var m = lane; m < ROWS; m += lanes) {
      let v = partial[m * WG + team * lanes];
      let at = m * params.n + n;
      if (ACCUMULATE) {
        y[at] = y[at] + v;
      } else {
        y[at] = v;
      }
    }
  }
}
