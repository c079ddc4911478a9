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
// Dispatch: grid (gx, gy) with gx·gy ≥ N; workgroup n = wg.y · gx + wg.x copies row n. Its WG
// invocations stride over the D columns, four at a time (columns j, j + WG, j + 2·WG, j + 3·WG):
// one f32 store each, coalesced; two neighbouring invocations read the same bf16x2 word. Any D works
// (for odd D a table row starts mid-word).
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

// Element e of the flattened table.
fn tableAt(e: u32) -> f32 {
  let w = table[e >> 1u];
  return select(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u), (e & 1u) == 1u);
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let n = wg.y * nwg.x + wg.x;
  if (n >= params.tokens) {
    return;
  }
  let D = params.hidden;
  let out = n * D;
  let id = ids[n];
  if (id < 0 || u32(id) >= params.vocab) {
    // A run-time bitcast: WGSL rejects NaN in a constant expression.
    let nanBits = 0x7fc00000u;
    for (var j = lid; j < D; j += WG) {
      x[out + j] = bitcast<f32>(nanBits);
    }
    return;
  }
  let src = u32(id) * D;
  let full = (D / (4u * WG)) * (4u * WG);
  for (var j = lid; j < full; j += 4u * WG) {
    let a = tableAt(src + j);
    let b = tableAt(src + j + WG);
    let c = tableAt(src + j + 2u * WG);
    let d = tableAt(src + j + 3u * WG);
    x[out + j] = a;
    x[out + j + WG] = b;
    x[out + j + 2u * WG] = c;
    x[out + j + 3u * WG] = d;
  }
  for (var j = full + lid; j < D; j += WG) {
    x[out + j] = tableAt(src + j);
  }
}
