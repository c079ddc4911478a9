// Rotary position embedding (Qwen3 / Llama "rotate_half" convention), applied IN PLACE to the
// query and the key projections of a batch in one dispatch.
//
// For token n, head h (the H query heads of q, then the Hkv key heads of k) and i < HALF = Dh/2:
//   p  = clamp(posIds[n], 0, maxPos − 1)          (positions restart at 0 in each packed example)
//   c  = cos[p, i],  s = sin[p, i]                (angle p·theta^(−2i/Dh), tabulated on the CPU in
//                                                  float64: WGSL sin/cos are imprecise for large angles)
//   x0 = x[n, h, i],  x1 = x[n, h, i + HALF]
//   x[n, h, i]        = x0·c − x1·s
//   x[n, h, i + HALF] = x1·c + x0·s
// With INVERSE = true the rotation is by −angle (s → −s). Each (x0, x1) pair is rotated by an
// orthogonal 2×2 matrix R, so the inverse is also the transpose: the backward pass maps dY to
// dX = Rᵀ·dY with the same dispatch.
// A position outside 0..maxPos−1 is clamped to the nearest table row so that no read leaves the
// table; callers validate positions against the table length before building a batch.
//
// Bindings (group 0):
//   0 params  uniform    RopeParams { tokens, qHeads, kHeads, maxPos }
//   1 q       read_write (N, H·Dh) f32    rotated in place
//   2 k       read_write (N, Hkv·Dh) f32  rotated in place
//   3 cosT    read       (maxPos, Dh/2) f32
//   4 sinT    read       (maxPos, Dh/2) f32
//   5 posIds  read       (N) i32
// Override constants: HALF = Dh/2, WG threads per workgroup, INVERSE.
// Dispatch: one thread per (token, head, i), tokens outermost, q heads before k heads, i fastest
// (so neighbouring threads touch neighbouring floats); flat index = (wg.y·65535 + wg.x)·WG + local.x,
// grid (min(G, 65535), ceil(G / 65535)) for G = ceil(N·(H + Hkv)·HALF / WG).
// Saves nothing: the backward pass needs only the positions and the table.

// #include "lib/grid_fold.wgsl"

override HALF: u32 = 64u;
override WG: u32 = 256u;
override INVERSE: bool = false;

struct RopeParams {
  tokens: u32,
  qHeads: u32,
  kHeads: u32,
  maxPos: u32,
}

@group(0) @binding(0) var<uniform> params: RopeParams;
@group(0) @binding(1) var<storage, read_write> q: array<f32>;
@group(0) @binding(2) var<storage, read_write> k: array<f32>;
@group(0) @binding(3) var<storage, read> cosT: array<f32>;
@group(0) @binding(4) var<storage, read> sinT: array<f32>;
@group(0) @binding(5) var<storage, read> posIds: array<i32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let e = (foldedWorkgroup(wg)) * WG + lid.x;
  let heads = params.qHeads + params.kHeads;
  let perToken = heads * HALF;
  if (e >= params.tokens * perToken) {
    return;
  }
  let n = e / perToken;
  let rem = e - n * perToken;
  let head = rem / HALF;
  let i = rem - head * HALF;
  let p = u32(clamp(posIds[n], 0, i32(params.maxPos) - 1));
  let c = cosT[p * HALF + i];
  var s = sinT[p * HALF + i];
  if (INVERSE) {
    s = -s;
  }
  if (head < params.qHeads) {
    let at = (n * params.qHeads + head) * 2u * HALF + i;
    let x0 = q[at];
    let x1 = q[at + HALF];
    q[at] = x0 * c - x1 * s;
    q[at + HALF] = x1 * c + x0 * s;
  } else {
    let at = (n * params.kHeads + head - params.qHeads) * 2u * HALF + i;
    let x0 = k[at];
    let x1 = k[at + HALF];
    k[at] = x0 * c - x1 * s;
    k[at + HALF] = x1 * c + x0 * s;
  }
}
