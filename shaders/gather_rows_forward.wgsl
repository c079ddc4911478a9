// Row gather: out[i, :] = src[index[i], :] for i < rows, rows of `width` f32.
// Used to pick each batch row's last hidden state (for logits_last) and to capture the residual
// stream after a layer (identity index) without leaving the compute pass.
//
// Bindings (group 0):
//   0 params  uniform    GatherRowsParams { rows, width, srcRows }
//   1 out     read_write (rows, width) f32
//   2 src     read       (srcRows, width) f32
//   3 index   read       (rows) i32, each in [0, srcRows); an index outside writes NaN (never read out of bounds)
// Dispatch: (ceil(width / WG), rows) workgroups of WG threads; rows ≤ 65535 per dispatch.
// Saves nothing.

override WG: u32 = 256u;

struct GatherRowsParams {
  rows: u32,
  width: u32,
  srcRows: u32,
}

@group(0) @binding(0) var<uniform> params: GatherRowsParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> index: array<i32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let row = wg.y;
  let col = wg.x * WG + lid.x;
  if (row >= params.rows || col >= params.width) {
    return;
  }
  let s = index[row];
  if (s < 0 || u32(s) >= params.srcRows) {
    let nan_bits = 0x7fc00000u; // a runtime value: WGSL refuses NaN as a constant expression
    out[row * params.width + col] = bitcast<f32>(nan_bits);
    return;
  }
  out[row * params.width + col] = src[u32(s) * params.width + col];
}
