// Per-(batch row, head) scale that keeps an attention operand inside f16's range before it is
// converted to f16 (issue 11 item 4), the rule of shaders/row_scale.wgsl applied to each head:
//   amax[b][h]              = max over t < T, d < Dh of |X[b·T + t][h·Dh + d]|
//   headScale[b·heads + h]  = 2^e,  e = clamp(14 − ceil(log2 amax[b][h]), −126, 126)
//                           = 1     when amax[b][h] is 0, infinite or NaN
// X is token-major (B·T, heads·Dh) f32: row n = b·T + t holds the heads' vectors of Dh one after
// another. The flash attention stages f16(X·headScale) for a whole (b, h) block and takes the
// power of two back out of its f32 results exactly. A head holding a NaN or ±Inf keeps scale 1,
// so the non-finite value reaches the output instead of being scaled away. The bit arithmetic
// (no float operation) is shaders/lib/f16_scale.wgsl, shared with row_scale.wgsl.
//
// Bindings (group 0):
//   0 params      uniform    HeadScaleParams { groups = B·heads, t = T, heads, dh4 = Dh / 4 }
//   1 head_scale  read_write (B·heads) f32   the scale of each (b, h)
//   2 x           read       (B·T, heads·Dh) f32, read as vec4<u32> bits (Dh a multiple of 4)
// Dispatch: foldGrid(B·heads) workgroups of WG invocations (shaders/lib/grid_fold.wgsl), one per
// (b, h) = (g / heads, g mod heads); invocation i takes the maximum over the head's T·Dh/4 vec4
// j ≡ i (mod WG), j = t·dh4 + d4 walked without a division per element, then a tree in workgroup
// memory takes the head's maximum. Saves nothing.

override WG: u32 = 256u;

struct HeadScaleParams {
  groups: u32,
  t: u32,
  heads: u32,
  dh4: u32,
}

@group(0) @binding(0) var<uniform> params: HeadScaleParams;
@group(0) @binding(1) var<storage, read_write> head_scale: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<u32>>;

var<workgroup> partial: array<u32, WG>;

// #include "lib/grid_fold.wgsl"
// #include "lib/f16_scale.wgsl"
// #include "lib/workgroup_max.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = foldedWorkgroup(wg);
  // groups past B·heads (the last fold row) take part in the barriers and write nothing
  let live = g < params.groups;
  var a = 0u;
  if (live) {
    let dh4 = params.dh4;
    let row4 = params.heads * dh4;
    let b = g / params.heads;
    let col = (g % params.heads) * dh4;
    let first = b * params.t;
    // (t, d) of element j = t·dh4 + d, advanced by WG = stepT·dh4 + stepD each iteration
    let stepT = WG / dh4;
    let stepD = WG % dh4;
    var t = lid / dh4;
    var d = lid % dh4;
    let count = params.t * dh4;
    for (var j = lid; j < count; j += WG) {
      let v = x[(first + t) * row4 + col + d] & vec4<u32>(0x7fffffffu);
      a = max(a, max(max(v.x, v.y), max(v.z, v.w)));
      d += stepD;
      t += stepT;
      if (d >= dh4) {
        d -= dh4;
        t += 1u;
      }
    }
  }
  let amax = workgroupMaxU32(lid, a);
  if (live && lid == 0u) {
    head_scale[g] = scaleFor(amax);
  }
}
