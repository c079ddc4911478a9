// KV cache write (generation): the keys and values of a chunk's n ≤ C new tokens, at positions
// p0 .. p0+n−1, are copied from the token-major projection outputs into the head-major cache:
//   kCache[g, p0 + i, :] = k[i, g, :],   vCache[g, p0 + i, :] = v[i, g, :]   for i < n, g < Hkv
// Rows of padding tokens (i ≥ n) are not written. p0 + n ≤ maxContext is checked on the CPU.
//
// Bindings (group 0):
//   0 params  uniform    KvWriteParams { rows, kvHeads, maxContext }
//   1 kCache  read_write (Hkv, maxContext, Dh) f32
//   2 vCache  read_write (Hkv, maxContext, Dh) f32
//   3 k       read       (C, Hkv·Dh) f32   keys after k_norm and rope
//   4 v       read       (C, Hkv·Dh) f32
//   5 chunk   read       (4) i32          [p0, n, −, −]
// Override constants: DH head dim (multiple of 4), WG threads per workgroup.
// Dispatch: one thread per (token, KV head, vec4 column), ceil(C·Hkv·DH/4 / WG) workgroups.
// Saves nothing.

override DH: u32 = 128u;
override WG: u32 = 256u;
override DH4: u32 = DH / 4u;

struct KvWriteParams {
  rows: u32,
  kvHeads: u32,
  maxContext: u32,
}

@group(0) @binding(0) var<uniform> params: KvWriteParams;
@group(0) @binding(1) var<storage, read_write> kCache: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> vCache: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> chunk: array<i32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let Hkv = params.kvHeads;
  let e = gid.x;
  if (e >= params.rows * Hkv * DH4) {
    return;
  }
  let i = e / (Hkv * DH4);
  let g = (e / DH4) % Hkv;
  let d4 = e % DH4;
  let p0 = u32(max(chunk[0], 0));
  let n = u32(max(chunk[1], 0));
  let pos = p0 + i;
  if (i >= n || pos >= params.maxContext) {
    return;
  }
  let dst = (g * params.maxContext + pos) * DH4 + d4;
  kCache[dst] = k[e];
  vCache[dst] = v[e];
}
