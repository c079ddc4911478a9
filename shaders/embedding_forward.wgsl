// Embedding gather: x[n, d] = table[ids[n], d] for n < N, d < D, converting bf16 to f32.
// An id outside [0, V) reads nothing and writes NaN over its whole row (the caller validates ids on
// the CPU first; NaN makes a miss visible in the loss instead of silently using another token).
//
// Bindings (group 0):
//   0 params  uniform    EmbeddingParams { tokens, hidden, vocab }   N, D, V
//   1 x       read_write (N, D) f32       output, the residual stream's first value
//   2 table   read       (V, D) bf16x2    embed_tokens.weight: element e of the flattened table is
//                                         the low (e even) or high (e odd) half of word e / 2
//   3 ids     read       (N) i32          token ids
//
// Dispatch: grid (gx, gy) with gx·gy ≥ ceil(N · ceil(D / 2) / WG); item i = (wg.y · gx + wg.x) · WG
// + local index writes x[n, 2k] and x[n, 2k + 1] for n = i / ceil(D / 2), k = i mod ceil(D / 2).
// For even D that is one aligned u32 word read and two adjacent f32 writes per invocation
// (coalesced); for odd D a row starts mid-word and a pair may span two words.
// Saves nothing: the base embedding is frozen.

override WG: u32 = 256u;

struct EmbeddingParams {
  tokens: u32,
  hidden: u32,
  vocab: u32,
}

@group(0) @binding(0) var<uniform> params: EmbeddingParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read> ids: array<i32>;

fn lo(w: u32) -> f32 {
  return bitcast<f32>(w << 16u);
}

fn hi(w: u32) -> f32 {
  return bitcast<f32>(w & 0xffff0000u);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let D = params.hidden;
  let pairs = (D + 1u) / 2u;
  let i = (wg.y * nwg.x + wg.x) * WG + lid;
  if (i >= params.tokens * pairs) {
    return;
  }
  let n = i / pairs;
  let d = 2u * (i - n * pairs);
  let out = n * D + d;
  let second = d + 1u < D;
  let id = ids[n];
  if (id < 0 || u32(id) >= params.vocab) {
    // A run-time bitcast: WGSL rejects NaN in a constant expression.
    let nanBits = 0x7fc00000u;
    let nan = bitcast<f32>(nanBits);
    x[out] = nan;
    if (second) {
      x[out + 1u] = nan;
    }
    return;
  }
  let e = u32(id) * D + d;
  let w = table[e >> 1u];
  if ((e & 1u) == 0u) {
    x[out] = lo(w);
    if (second) {
      x[out + 1u] = hi(w);
    }
  } else {
    x[out] = hi(w);
    if (second) {
      x[out + 1u] = lo(table[(e >> 1u) + 1u]);
    }
  }
}
