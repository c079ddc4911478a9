// 8-bit AdamW step as bitsandbytes' kOptimizerStatic8bit2StateBlockwise (adamw_8bit,
// paged_adamw_8bit): the moments are stored as one byte per element, blockwise quantised in blocks
// of 256 consecutive elements with one f32 absmax per block and moment; m uses bitsandbytes' signed
// dynamic map, v the unsigned one (create_dynamic_map). For each block, per element, with
// g = grad · gradScale · clipCoef:
//   1. m = qmap1[code1]·absmax1,  v = qmap2[code2]·absmax2                        (dequantise)
//   2. v ← v·β2 + ((1 − β2)·g)·g,  m ← m·β1 + (1 − β1)·g                          (update)
//      (a non-finite gradient element instead sets m = v = 0 and leaves p alone, as bitsandbytes)
//   3. absmax1 = max |m|, absmax2 = max |v| over the block                         (new scales)
//   4. p ← p + stepSize · m / (√v + epsTerm), then p ← p · decay                   (weight decay after)
//      stepSize = −lr·√(1 − β2^t)/(1 − β1^t), epsTerm = eps·√(1 − β2^t), decay = 1 − lr·wd
//   5. code1 = quantize(m / absmax1) in the signed map, moved one code towards the sign of m when the
//      chosen code has the other sign; code2 = quantize(v / absmax2) in the unsigned map. quantize is
//      bitsandbytes' quantize_2D: a 7-step binary search from code 127, then the nearer of the
//      bracketing codes by midpoint. A block whose absmax is 0 quantises x = 0 (bitsandbytes divides
//      0 by 0 there: other codes, which decode to 0 all the same). Elements past count take no part
//      (bitsandbytes pads a partial last block with code 128 of m, a ~5e-7·absmax contribution).
// When gradNorm.nonFinite ≠ 0 the whole step is skipped: nothing is written.
//
// Bindings (group 0):
//   0 params    uniform    Adamw8bitParams { count, blockBase, gradScale, beta1, oneMinusBeta1, beta2,
//                                            oneMinusBeta2, stepSize, epsTerm, decay }
//   1 param     read_write (count / 4) vec4<f32> — parameters (count a multiple of 4)
//   2 codes1    read_write (count) u8x4 — m codes, byte j of word i is element 4i + j
//   3 codes2    read_write (count) u8x4 — v codes
//   4 absmax    read_write (blocks, 2) f32 — [absmax1, absmax2] of every block of the whole state;
//                          this dispatch's block b is absmax[blockBase + b]
//   5 grad      read       (count / 4) vec4<f32> — gradients
//   6 qmaps     read       (512) f32 — the signed dynamic map (0…255), then the unsigned one (256…511)
//   7 gradNorm  read       GradNormState { totalNorm, clipCoef, nonFinite, skippedSteps }
// Dispatch: any number of workgroups of WG invocations (x, y; the host caps it), which walk the
// groups of WG / 64 blocks grid-stride, so that each sets up the maps once. Within a group each run
// of 64 invocations owns one 256-element block, invocation l of it elements 4l … 4l + 3 (one vec4 of
// p and g, one u32 of each code array: coalesced). Both maps sit in workgroup memory, as given (for
// dequantising) and in search-tree order (for quantising, four values per search step); the block
// maxima are reduced by a tree over the 64 invocations in workgroup memory.
// Saves nothing.

override WG: u32 = 256u;
const LANES: u32 = 64u;

struct Adamw8bitParams {
  count: u32,
  blockBase: u32,
  gradScale: f32,
  beta1: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  stepSize: f32,
  epsTerm: f32,
  decay: f32,
}

struct GradNormState {
  totalNorm: f32,
  clipCoef: f32,
  nonFinite: u32,
  skippedSteps: u32,
}

@group(0) @binding(0) var<uniform> params: Adamw8bitParams;
@group(0) @binding(1) var<storage, read_write> param: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> codes1: array<u32>;
@group(0) @binding(3) var<storage, read_write> codes2: array<u32>;
@group(0) @binding(4) var<storage, read_write> absmax: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> qmaps: array<f32, 512>;
@group(0) @binding(7) var<storage, read> gradNorm: GradNormState;

var<workgroup> code: array<f32, 512>;
// The same maps in search-tree order for quantize4: tree[t·256 + e], e = 1 … 255, is the code the
// binary search compares with at node e (root e = 1 is code 127; node e has children 2e and 2e + 1).
// Each level of the search then reads a contiguous range, so the invocations of a subgroup hit
// different banks (in the maps' own order every level falls in one bank).
var<workgroup> tree: array<f32, 512>;
var<workgroup> max1: array<f32, WG>;
var<workgroup> max2: array<f32, WG>;
var<workgroup> skipFlag: u32;

const EXP_MASK: u32 = 0x7f800000u;

// Code index at search-tree node e: from 127, ± 64, ± 32, … for the bits of e after its leading 1.
fn treePivot(e: u32) -> u32 {
  let level = firstLeadingBit(e);
  var pivot = 127u;
  for (var j = 0u; j < level; j++) {
    let step = 64u >> j;
    pivot = select(pivot - step, pivot + step, ((e >> (level - 1u - j)) & 1u) == 1u);
  }
  return pivot;
}

// bitsandbytes' quantize_2D for four values at once, over the map t (0 signed, 1 unsigned):
// seven halving steps from code 127, then the nearer of the final code and the last bracketing
// code, compared at the f32 midpoint. `lowest` is the search's initial lower bound (−1 or 0).
fn quantize4(t: u32, lowest: f32, x: vec4<f32>) -> vec4<u32> {
  let base = t * 256u;
  var e = vec4<u32>(1u);
  var pivot = vec4<u32>(127u);
  var lowerPivot = vec4<u32>(0u);
  var upperPivot = vec4<u32>(255u);
  var lower = vec4<f32>(lowest);
  var upper = vec4<f32>(1.0);
  var val = vec4<f32>(tree[base + 1u]);
  for (var i = 64u; i > 0u; i >>= 1u) {
    let gt = x > val;
    lowerPivot = select(lowerPivot, pivot, gt);
    lower = select(lower, val, gt);
    upperPivot = select(pivot, upperPivot, gt);
    upper = select(val, upper, gt);
    pivot = select(pivot - vec4<u32>(i), pivot + vec4<u32>(i), gt);
    e = 2u * e + select(vec4<u32>(0u), vec4<u32>(1u), gt);
    val = vec4<f32>(tree[base + e.x], tree[base + e.y], tree[base + e.z], tree[base + e.w]);
  }
  let above = select(pivot, upperPivot, x > (upper + val) * 0.5);
  let below = select(pivot, lowerPivot, x < (lower + val) * 0.5);
  return select(below, above, x > val);
}

// One group of WG / 64 blocks: block b = group · (WG / 64) + lid / 64 of this dispatch.
fn updateGroup(group: u32, lid: u32) {
  let lane = lid % LANES;
  let block = group * (WG / LANES) + lid / LANES;
  let e4 = block * LANES + lane;
  let valid = e4 * 4u < params.count;
  let scale = params.gradScale * gradNorm.clipCoef;

  var s1 = vec4<f32>(0.0);
  var s2 = vec4<f32>(0.0);
  var finite = vec4<bool>(false);
  if (valid) {
    let g4 = grad[e4];
    let w1 = codes1[e4];
    let w2 = codes2[e4];
    let am = absmax[params.blockBase + block];
    for (var j = 0u; j < 4u; j++) {
      let gj = g4[j];
      finite[j] = (bitcast<u32>(gj) & EXP_MASK) != EXP_MASK;
      if (finite[j]) {
        let gv = gj * scale;
        let v = code[256u + ((w2 >> (8u * j)) & 255u)] * am.y;
        s2[j] = v * params.beta2 + (params.oneMinusBeta2 * gv) * gv;
        let m = code[(w1 >> (8u * j)) & 255u] * am.x;
        s1[j] = m * params.beta1 + params.oneMinusBeta1 * gv;
      }
    }
  }
  let a1 = abs(s1);
  let a2 = abs(s2);
  max1[lid] = max(max(a1.x, a1.y), max(a1.z, a1.w));
  max2[lid] = max(max(a2.x, a2.y), max(a2.z, a2.w));
  workgroupBarrier();
  for (var h = LANES / 2u; h > 0u; h >>= 1u) {
    if (lane < h) {
      max1[lid] = max(max1[lid], max1[lid + h]);
      max2[lid] = max(max2[lid], max2[lid + h]);
    }
    workgroupBarrier();
  }
  let first = lid - lane;
  let b1 = max1[first];
  let b2 = max2[first];
  // The next group overwrites max1 / max2: everyone has read the maxima first.
  workgroupBarrier();
  if (!valid) {
    return;
  }
  if (lane == 0u) {
    absmax[params.blockBase + block] = vec2<f32>(b1, b2);
  }

  var p = param[e4];
  let x1 = select(s1 / b1, vec4<f32>(0.0), b1 == 0.0);
  let x2 = select(s2 / b2, vec4<f32>(0.0), b2 == 0.0);
  let q1 = quantize4(0u, -1.0, x1);
  let q2 = quantize4(1u, 0.0, x2);
  var c1 = 0u;
  var c2 = 0u;
  for (var j = 0u; j < 4u; j++) {
    if (finite[j]) {
      p[j] = p[j] + params.stepSize * (s1[j] / (sqrt(s2[j]) + params.epsTerm));
      p[j] = p[j] * params.decay;
    }
    // Keep the sign of m: bitsandbytes compares sign bits (signbit), so −0 counts as negative.
    var c = q1[j];
    if ((bitcast<u32>(code[c]) >> 31u) != (bitcast<u32>(s1[j]) >> 31u)) {
      c = select((c + 255u) & 255u, (c + 1u) & 255u, s1[j] > 0.0);
    }
    c1 |= c << (8u * j);
    c2 |= q2[j] << (8u * j);
  }
  param[e4] = p;
  codes1[e4] = c1;
  codes2[e4] = c2;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  for (var k = lid; k < 512u; k += WG) {
    code[k] = qmaps[k];
    let e = k % 256u;
    // e = 0 is no node (firstLeadingBit(0) is all ones): give it the root's code, never read.
    tree[k] = qmaps[k - e + treePivot(max(e, 1u))];
  }
  if (lid == 0u) {
    skipFlag = gradNorm.nonFinite;
  }
  // Also the barrier that makes code[] and tree[] visible.
  if (workgroupUniformLoad(&skipFlag) != 0u) {
    return;
  }
  // Grid-stride over groups of blocks, so that the maps are set up once per workgroup.
  let groupCount = (params.count + WG * 4u - 1u) / (WG * 4u);
  for (var group = wg.y * ng.x + wg.x; group < groupCount; group += ng.x * ng.y) {
    updateGroup(group, lid);
  }
}
