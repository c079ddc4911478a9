// Attention of a chunk against the KV cache, second pass: merges the S key splits of
// attention_decode.wgsl. For query token i < n and head h, with (O_s, m_s, l_s) of split s
// (O_s unnormalised, m_s the split's running max in base-2 units, l_s its sum of exp2(s_j − m_s)):
//   M = max_s m_s,   w_s = exp2(m_s − M),   o[i, h, :] = Σ_s w_s·O_s / Σ_s w_s·l_s
// An empty split (m = MASKED, l = 0, O = 0) weighs 0: every token sees at least itself, so M is a
// real score. Rows of padding tokens (i ≥ n) are written as zeros.
//
// Bindings (group 0):
//   0 params  uniform    AttentionCombineParams { rows, qHeads, splits }
//   1 o       read_write (C, H·Dh) f32     attention output, the input of o_proj
//   2 oPart   read       (S, C, H·Dh) f32
//   3 mlPart  read       (S, C, H, 2) f32
//   4 chunk   read       (4) i32          [p0, n, −, −]
// Override constants: DH head dim (multiple of 4), WG threads per workgroup.
// Dispatch: one thread per (token, head, vec4 column), ceil(C·H·DH/4 / WG) workgroups.
// Saves nothing.

override DH: u32 = 128u;
override WG: u32 = 256u;
override DH4: u32 = DH / 4u;

struct AttentionCombineParams {
  rows: u32,
  qHeads: u32,
  splits: u32,
}

@group(0) @binding(0) var<uniform> params: AttentionCombineParams;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> oPart: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> mlPart: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> chunk: array<i32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let C = params.rows;
  let H = params.qHeads;
  let S = params.splits;
  let e = gid.x;
  if (e >= C * H * DH4) {
    return;
  }
  let row = e / DH4;  // (i, h) = (row / H, row % H)
  let i = row / H;
  if (i >= u32(max(chunk[1], 0))) {
    o[e] = vec4<f32>(0.0);
    return;
  }
  var m = mlPart[row].x;
  for (var s = 1u; s < S; s++) {
    m = max(m, mlPart[s * C * H + row].x);
  }
  var acc = vec4<f32>(0.0);
  var l = 0.0;
  for (var s = 0u; s < S; s++) {
    let ml = mlPart[s * C * H + row];
    let w = exp2(ml.x - m);
    l += w * ml.y;
    acc = fma(vec4<f32>(w), oPart[s * C * H * DH4 + e], acc);
  }
  o[e] = acc * select(0.0, 1.0 / l, l > 0.0);
}
