// Staging of attention rows into f16 tiles of workgroup memory, for the subgroup-matrix attention
// kernels. The source is token-major (B·T tokens × heads × DH f32, read as vec4); a tile holds `rows`
// tokens from `first` (of the batch row starting at token tok0) of one head, written times that
// head's power-of-two scale as f16 into halves[base + row·SK ..] (rows past T and past the tile as
// zeros). An invocation's rounds (element e = lid + n·THREADS of the tile: row e / DH4, vec4 column
// e % DH4) are loaded eight at a time into registers (Rows), every load before any write, so a tile
// waits for one global-load latency per eight rounds, not one per round (the forward's key loop ran
// 1.3× faster for it on the H200, bench/results/h200-2026-12-04-s2-*).
//
// The including shader defines THREADS, DH4 (vec4 columns of a head), SK (the tiles' row stride in
// halves), the workgroup array `halves` and params.tokens.

// Eight rounds of an invocation's tile values, still f32 (named fields: arrays indexed in loops
// ran about 2× slower in the matmul kernel).
struct Rows {
  r0: vec4<f32>,
  r1: vec4<f32>,
  r2: vec4<f32>,
  r3: vec4<f32>,
  r4: vec4<f32>,
  r5: vec4<f32>,
  r6: vec4<f32>,
  r7: vec4<f32>,
}

// Eight rounds of zeros.
fn rowsZero() -> Rows {
  return Rows(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// Round n's value: row e / DH4 of the tile, zeros past the tile or past T.
fn rowsRound(src: ptr<storage, array<vec4<f32>>, read>, lid: u32, n: u32, tok0: u32, first: u32, rows: u32, heads: u32, head: u32) -> vec4<f32> {
  let e = lid + n * THREADS;
  let r = e / DH4;
  if (r >= rows || first + r >= params.tokens) {
    return vec4<f32>(0.0);
  }
  return (*src)[((tok0 + first + r) * heads + head) * DH4 + e % DH4];
}

// The rounds of a tile of `rows` rows an invocation takes part in.
fn rowsRounds(rows: u32) -> u32 {
  return (rows * DH4 + THREADS - 1u) / THREADS;
}

// Rounds n0 .. n0 + 7 (those below rowsRounds(rows); the others zeros).
fn rowsLoad(src: ptr<storage, array<vec4<f32>>, read>, lid: u32, n0: u32, tok0: u32, first: u32, rows: u32, heads: u32, head: u32) -> Rows {
  let m = rowsRounds(rows);
  var t = rowsZero();
  t.r0 = rowsRound(src, lid, n0, tok0, first, rows, heads, head);
  if (m > n0 + 1u) { t.r1 = rowsRound(src, lid, n0 + 1u, tok0, first, rows, heads, head); }
  if (m > n0 + 2u) { t.r2 = rowsRound(src, lid, n0 + 2u, tok0, first, rows, heads, head); }
  if (m > n0 + 3u) { t.r3 = rowsRound(src, lid, n0 + 3u, tok0, first, rows, heads, head); }
  if (m > n0 + 4u) { t.r4 = rowsRound(src, lid, n0 + 4u, tok0, first, rows, heads, head); }
  if (m > n0 + 5u) { t.r5 = rowsRound(src, lid, n0 + 5u, tok0, first, rows, heads, head); }
  if (m > n0 + 6u) { t.r6 = rowsRound(src, lid, n0 + 6u, tok0, first, rows, heads, head); }
  if (m > n0 + 7u) { t.r7 = rowsRound(src, lid, n0 + 7u, tok0, first, rows, heads, head); }
  return t;
}

// Writes round n's value times s as f16 into the tile at halves[base].
fn rowsWrite(lid: u32, n: u32, rows: u32, base: u32, val: vec4<f32>, s: f32) {
  let e = lid + n * THREADS;
  if (e < rows * DH4) {
    let h = vec4<f16>(val * s);
    let d = base + (e / DH4) * SK + (e % DH4) * 4u;
    halves[d] = h.x;
    halves[d + 1u] = h.y;
    halves[d + 2u] = h.z;
    halves[d + 3u] = h.w;
  }
}

// Writes rounds n0 .. n0 + 7 of t (as loaded by rowsLoad with the same n0 and rows).
fn rowsStore(lid: u32, n0: u32, rows: u32, base: u32, t: Rows, s: f32) {
  let m = rowsRounds(rows);
  rowsWrite(lid, n0, rows, base, t.r0, s);
  if (m > n0 + 1u) { rowsWrite(lid, n0 + 1u, rows, base, t.r1, s); }
  if (m > n0 + 2u) { rowsWrite(lid, n0 + 2u, rows, base, t.r2, s); }
  if (m > n0 + 3u) { rowsWrite(lid, n0 + 3u, rows, base, t.r3, s); }
  if (m > n0 + 4u) { rowsWrite(lid, n0 + 4u, rows, base, t.r4, s); }
  if (m > n0 + 5u) { rowsWrite(lid, n0 + 5u, rows, base, t.r5, s); }
  if (m > n0 + 6u) { rowsWrite(lid, n0 + 6u, rows, base, t.r6, s); }
  if (m > n0 + 7u) { rowsWrite(lid, n0 + 7u, rows, base, t.r7, s); }
}

// Stages the whole tile, eight rounds at a time.
fn stageRows(src: ptr<storage, array<vec4<f32>>, read>, lid: u32, tok0: u32, first: u32, rows: u32, heads: u32, head: u32, base: u32, s: f32) {
  for (var n0 = 0u; n0 < rowsRounds(rows); n0 += 8u) {
    rowsStore(lid, n0, rows, base, rowsLoad(src, lid, n0, tok0, first, rows, heads, head), s);
  }
}
