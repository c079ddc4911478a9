// NF4 quantisation of a weight, bit-exact with bitsandbytes' kQuantizeBlockwise (NF4, blocksize 64):
//   absmax[b] = max |w[e]| over the block b of 64 consecutive elements of the flattened weight
//   s         = w[e] · rn(1 / absmax[b])      (f32: the reciprocal rounded once, then one rounded product)
//   code[e]   = number of dQuantizeNF4 thresholds t with s > t (its decision tree is a monotone search
//               over these 15 midpoints between codebook entries, so counting is the same function)
// A block whose absmax is below 2^-126 (zero, or subnormal values a GPU may flush) gets code 0 in
// every element: bitsandbytes computes 0 · (1/0) = NaN there, and NaN fails every `>` of the tree.
// The division 1/absmax is only accurate to 2.5 ulp in WGSL (and on NVIDIA), so recipRn corrects it
// to the nearest f32 by comparing the fused residuals 1 − a·r of the neighbouring candidates.
//
// Bindings (group 0):
//   0 params  uniform    Nf4QuantizeParams { numel }   elements of the weight, a multiple of 64
//   1 packed  read_write (numel / 8) u32  nf4x8: byte j of word i holds element 8i+2j in its high
//                                         nibble and 8i+2j+1 in its low nibble (bitsandbytes' bytes)
//   2 absmax  read_write (numel / 64) f32  one scale per block
//   3 weight  read       (numel) bf16x2 (numel / 2 u32 words) when INPUT_F32 is false, else f32 bits
// Dispatch: one thread per packed word (8 elements, so 8 threads per block), WG threads per
// workgroup, workgroups (min(G, 65535), ceil(G / 65535)) with G = ceil(numel / 8 / WG);
// word = (wg.y · 65535 + wg.x) · WG + local.x. Saves nothing (a load-time step).

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;
override INPUT_F32: bool = false;

struct Nf4QuantizeParams {
  numel: u32,
}

@group(0) @binding(0) var<uniform> params: Nf4QuantizeParams;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<u32>;

var<workgroup> partial: array<f32, WG>;

const MIN_NORMAL: f32 = 1.17549435e-38;

// The 15 thresholds of bitsandbytes' dQuantizeNF4, as the f32 values its C literals round to.
const T0 = 0xbf591cd8u; // -0.8480964004993439
const T1 = 0xbf1c5270u; // -0.6106329262256622
const T2 = 0xbeeb8480u; // -0.4599952697753906
const T3 = 0xbeadea76u; // -0.33967943489551544
const T4 = 0xbe703cecu; // -0.23460740596055984
const T5 = 0xbe0d38bcu; // -0.13791173323988914
const T6 = 0xbd3a7871u; // -0.045525018125772476
const T7 = 0x3d22faffu; // 0.03979014977812767
const T8 = 0x3df64862u; // 0.1202552504837513
const T9 = 0x3e5067e0u; // 0.2035212516784668
const T10 = 0x3e9582d4u; // 0.2920137718319893
const T11 = 0x3ec753f9u; // 0.3893125355243683
const T12 = 0x3f006d04u; // 0.5016634166240692
const T13 = 0x3f248dafu; // 0.6427869200706482
const T14 = 0x3f5c89dau; // 0.8614784181118011

fn above(s: f32, t: u32) -> u32 {
  return select(0u, 1u, s > bitcast<f32>(t));
}

fn nf4Code(s: f32) -> u32 {
  return above(s, T0) + above(s, T1) + above(s, T2) + above(s, T3) + above(s, T4) + above(s, T5) +
    above(s, T6) + above(s, T7) + above(s, T8) + above(s, T9) + above(s, T10) + above(s, T11) +
    above(s, T12) + above(s, T13) + above(s, T14);
}

// Nearest f32 to 1/a for a normal, positive a: the division is within 2.5 ulp, so the answer is
// among its 2 neighbours on each side; the one with the smallest |1 − a·c| (exact in a fused
// multiply-add for the close candidates) is the correctly rounded reciprocal.
fn recipRn(a: f32) -> f32 {
  let r = bitcast<u32>(1.0 / a);
  var best = r;
  var err = abs(fma(-a, bitcast<f32>(r), 1.0));
  for (var i = 0u; i < 5u; i++) {
    let c = r - 2u + i; // bit patterns of positive floats are ordered like the floats
    let e = abs(fma(-a, bitcast<f32>(c), 1.0));
    if (e < err) {
      best = c;
      err = e;
    }
  }
  return bitcast<f32>(best);
}

fn element(e: u32) -> f32 {
  if (INPUT_F32) {
    return bitcast<f32>(weight[e]);
  }
  let word = weight[e >> 1u];
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let word = (foldedWorkgroup(wg)) * WG + lid.x;
  let valid = word * 8u < params.numel;
  var v: array<f32, 8>;
  var m = 0.0;
  if (valid) {
    for (var j = 0u; j < 8u; j++) {
      v[j] = element(word * 8u + j);
      m = max(m, abs(v[j]));
    }
  }
  partial[lid.x] = m;
  workgroupBarrier();
  if (!valid) {
    return;
  }
  // max is exact, so the order of this reduction does not matter
  let first = lid.x & ~7u;
  var amax = 0.0;
  for (var j = 0u; j < 8u; j++) {
    amax = max(amax, partial[first + j]);
  }
  if ((lid.x & 7u) == 0u) {
    absmax[word >> 3u] = amax;
  }
  var out = 0u;
  if (amax >= MIN_NORMAL) {
    let r = recipRn(amax);
    for (var j = 0u; j < 4u; j++) {
      let hi = nf4Code(v[2u * j] * r);
      let lo = nf4Code(v[2u * j + 1u] * r);
      out |= ((hi << 4u) | lo) << (8u * j);
    }
  }
  packed[word] = out;
}
