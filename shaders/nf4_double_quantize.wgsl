// Double quantisation of NF4 block scales (bitsandbytes' quantize_blockwise of `absmax − offset`,
// blocksize 256, signed dynamic map), bit-exact with its kQuantizeBlockwise + dQuantize<0>:
//   v[i]       = absmax[i] − offset                         (f32)
//   absmax2[c] = max |v| over the chunk c of 256 consecutive block scales
//   codes[i]   = dQuantize(v[i] · rn(1 / absmax2[c]))        (binary search of the 256-entry map,
//                then the nearer neighbour by the f32 midpoint, ties as bitsandbytes breaks them)
// A chunk whose absmax2 is below 2^-126 gets code 0 everywhere (bitsandbytes: NaN → code 0).
// Dequantisation: absmax[i] = qmap[codes[i]] · absmax2[i >> 8] + offset.
//
// Bindings (group 0):
//   0 params   uniform    Nf4DoubleQuantizeParams { count }   number of block scales
//   1 codes    read_write (ceil(count / 4)) u32  u8x4: byte j of word i is the code of scale 4i+j
//   2 absmax2  read_write (ceil(count / 256)) f32
//   3 absmax   read       (count) f32  the NF4 block scales
//   4 offset   read       (1) f32      written by nf4_double_quantize_mean.wgsl
//   5 qmap     read       (256) f32    bitsandbytes' create_dynamic_map(signed=True), ascending
// Dispatch: one workgroup of 256 threads per chunk of 256 scales, workgroups (min(C, 65535),
// ceil(C / 65535)) with C = ceil(count / 256); chunk = wg.y · 65535 + wg.x. Saves nothing.

// #include "lib/grid_fold.wgsl"

struct Nf4DoubleQuantizeParams {
  count: u32,
}

@group(0) @binding(0) var<uniform> params: Nf4DoubleQuantizeParams;
@group(0) @binding(1) var<storage, read_write> codes: array<u32>;
@group(0) @binding(2) var<storage, read_write> absmax2: array<f32>;
@group(0) @binding(3) var<storage, read> absmax: array<f32>;
@group(0) @binding(4) var<storage, read> offset: array<f32>;
@group(0) @binding(5) var<storage, read> qmap: array<f32>;

const CHUNK: u32 = 256u;
const MIN_NORMAL: f32 = 1.17549435e-38;

var<workgroup> lut: array<f32, 256>;
var<workgroup> red: array<f32, 256>;
var<workgroup> code: array<u32, 256>;

// As nf4_quantize.wgsl: the nearest f32 to 1/a, correcting the 2.5-ulp WGSL division.
fn recipRn(a: f32) -> f32 {
  let r = bitcast<u32>(1.0 / a);
  var best = r;
  var err = abs(fma(-a, bitcast<f32>(r), 1.0));
  for (var i = 0u; i < 5u; i++) {
    let c = r - 2u + i;
    let e = abs(fma(-a, bitcast<f32>(c), 1.0));
    if (e < err) {
      best = c;
      err = e;
    }
  }
  return bitcast<f32>(best);
}

// bitsandbytes' dQuantize<0>: 7 halvings from pivot 127, then the closer of the two neighbours.
fn dQuantize(x: f32) -> u32 {
  var pivot = 127u;
  var upperPivot = 255u;
  var lowerPivot = 0u;
  var lower = -1.0;
  var upper = 1.0;
  var val = lut[pivot];
  for (var i = 64u; i > 0u; i >>= 1u) {
    if (x > val) {
      lowerPivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upperPivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = lut[pivot];
  }
  if (upperPivot == 255u) {
    upper = lut[255];
  }
  if (lowerPivot == 0u) {
    lower = lut[0];
  }
  if (x > val) {
    let midpoint = (upper + val) * 0.5;
    return select(pivot, upperPivot, x > midpoint);
  }
  let midpoint = (lower + val) * 0.5;
  return select(pivot, lowerPivot, x < midpoint);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let chunk = foldedWorkgroup(wg);
  let i = chunk * CHUNK + lid.x;
  let valid = i < params.count;
  lut[lid.x] = qmap[lid.x];
  var v = 0.0;
  if (valid) {
    v = absmax[i] - offset[0];
  }
  red[lid.x] = abs(v);
  for (var half = CHUNK / 2u; half > 0u; half >>= 1u) {
    workgroupBarrier();
    if (lid.x < half) {
      red[lid.x] = max(red[lid.x], red[lid.x + half]);
    }
  }
  workgroupBarrier();
  let a2 = red[0];
  if (lid.x == 0u && chunk * CHUNK < params.count) {
    absmax2[chunk] = a2;
  }
  var q = 0u;
  if (valid && a2 >= MIN_NORMAL) {
    q = dQuantize(v * recipRn(a2));
  }
  code[lid.x] = q;
  workgroupBarrier();
  if (lid.x < CHUNK / 4u) {
    let first = chunk * CHUNK + 4u * lid.x;
    if (first < params.count) {
      let b = 4u * lid.x;
      codes[first >> 2u] = code[b] | (code[b + 1u] << 8u) | (code[b + 2u] << 16u) | (code[b + 3u] << 24u);
    }
  }
}
