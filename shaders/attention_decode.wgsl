// Attention of a chunk of new tokens against the KV cache (generation), flash style, split over keys:
// the first of two passes (attention_decode_combine.wgsl merges the splits).
//
// The chunk holds n ≤ C new tokens at positions p0 .. p0+n−1 (p0 and n read from `chunk` at run time,
// so one pre-bound dispatch serves every step). Their keys and values are already in the cache
// (attention_decode_kv_write.wgsl ran before). For query token i < n, query head h, KV head
// g = h / G (G = H / Hkv, grouped-query attention) and every key j ≤ p0 + i (causal):
//   s_j = scale · q[i, h, :] · kCache[g, j, :]
//   o[i, h, :] = Σ_j exp(s_j − lse) · vCache[g, j, :],   lse = log Σ_j exp(s_j)
// Scores are kept in base-2 units (q pre-multiplied by scale·log2 e, exp2 for the exponentials).
//
// Work split. Workgroup (x, y): KV head g = x / QT and query tile qt = x % QT (QT = ceil(C / BQ)),
// key split s = y of S. Its rows are the R = BQ·G pairs (query token q0 + r / G, query head
// g·G + r % G): the G query heads sharing KV head g read each staged K/V row once. The keys the
// tile can see, [0, kvLimit) with kvLimit = p0 + min(q0 + BQ, n), are cut into S equal ranges
// rounded up to whole tiles of BC keys; split s folds its range tile by tile into a running
// (max m, sum l, unnormalised accumulator O) per row and writes (O, m, l) unnormalised. A split
// whose range is empty writes m = MASKED, l = 0, O = 0 (its weight in the combine is 0). Rows of
// tokens i ≥ n (the padding of a partly filled chunk) write nothing; the combine zeroes them.
//
// Bindings (group 0):
//   0 params  uniform    AttentionDecodeParams { rows, qHeads, kvHeads, maxContext, splits, scale }
//   1 oPart   read_write (S, C, H·Dh) f32     unnormalised Σ_j exp2(s_j − m)·v_j of each split
//   2 mlPart  read_write (S, C, H, 2) f32     (m, l) of each split: running max (base 2) and sum
//   3 q       read       (C, H·Dh) f32        queries after q_norm and rope, token-major
//   4 kCache  read       (Hkv, maxContext, Dh) f32  keys after k_norm and rope
//   5 vCache  read       (Hkv, maxContext, Dh) f32
//   6 chunk   read       (4) i32              [p0, n, −, −]
// Override constants: DH head dim (multiple of 4), G query heads per KV head, BQ query tokens per
// workgroup, BC keys per tile, WG threads, OPT = ceil(BQ·G·DH/4 / WG) ≤ MAX_OPT vec4 outputs per thread.
// Dispatch: (Hkv · ceil(C / BQ), S) workgroups.
// Saves nothing (inference only).
//
// Phases per key tile: A stage K (all threads); B scores, one (row, key) pair per thread and round;
// C online softmax, one thread per row, while all threads stage V over K; D O ← alpha·O + P·V,
// each thread owning OPT (row, vec4 column) outputs in registers.

override DH: u32 = 128u;
override G: u32 = 4u;
override BQ: u32 = 1u;
override BC: u32 = 32u;
override WG: u32 = 128u;
override OPT: u32 = 1u;

const MAX_OPT: u32 = 16u;
const MASKED: f32 = -1.0e30;       // score of an invisible key (finite: no inf arithmetic)
const VISIBLE_MIN: f32 = -1.0e29;  // a score above this is a real one
const LOG2E: f32 = 1.4426950408889634;

override DH4: u32 = DH / 4u;
override ROW4: u32 = DH4 + 1u;     // vec4 per staged K/V row (one of padding against bank conflicts)
override R: u32 = BQ * G;          // rows of the workgroup
override Q_ROUNDS: u32 = (R * DH4 + WG - 1u) / WG;
override KV_ROUNDS: u32 = (BC * DH4 + WG - 1u) / WG;
override S_ROUNDS: u32 = (R * BC + WG - 1u) / WG;

struct AttentionDecodeParams {
  rows: u32,
  qHeads: u32,
  kvHeads: u32,
  maxContext: u32,
  splits: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: AttentionDecodeParams;
@group(0) @binding(1) var<storage, read_write> oPart: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> mlPart: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> kCache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> vCache: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> chunk: array<i32>;

var<workgroup> qs: array<vec4<f32>, R * DH4>;     // Q rows · scale · log2 e
var<workgroup> kvs: array<vec4<f32>, BC * ROW4>;  // K tile, then V tile
var<workgroup> ss: array<f32, R * BC>;            // scores, then probabilities
var<workgroup> rowM: array<f32, R>;               // running max (base-2 units)
var<workgroup> rowL: array<f32, R>;               // running sum of exp2(s − m)
var<workgroup> rowA: array<f32, R>;               // this tile's rescale factor exp2(m_old − m_new)
var<workgroup> chunkP0: u32;
var<workgroup> chunkN: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) {
    chunkP0 = u32(max(chunk[0], 0));
    chunkN = u32(max(chunk[1], 0));
  }
  // The same values in every thread, and uniform to the compiler: loop bounds below depend on them.
  let p0 = workgroupUniformLoad(&chunkP0);
  let n = workgroupUniformLoad(&chunkN);

  let C = params.rows;
  let H = params.qHeads;
  let S = params.splits;
  let QT = (C + BQ - 1u) / BQ;
  let g = wg.x / QT;
  let q0 = (wg.x % QT) * BQ;
  let s = wg.y;
  if (q0 >= n) {
    return;  // every row of this tile is padding
  }
  let kvLimit = p0 + min(q0 + BQ, n);
  let perSplit = ((kvLimit + S - 1u) / S + BC - 1u) / BC * BC;
  let kStart = min(s * perSplit, kvLimit);
  let kEnd = min(kStart + perSplit, kvLimit);

  // Stage the Q rows; rows of padding tokens are zero.
  let qScale = params.scale * LOG2E;
  for (var t = 0u; t < Q_ROUNDS; t++) {
    let e = lid + t * WG;
    let r = e / DH4;
    let d4 = e % DH4;
    let i = q0 + r / G;
    let h = g * G + r % G;
    if (e < R * DH4) {
      var val = vec4<f32>(0.0);
      if (i < n) {
        val = q[(i * H + h) * DH4 + d4] * qScale;
      }
      qs[r * DH4 + d4] = val;
    }
  }
  for (var r = lid; r < R; r += WG) {
    rowM[r] = MASKED;
    rowL[r] = 0.0;
  }
  var acc: array<vec4<f32>, MAX_OPT>;
  for (var t = 0u; t < MAX_OPT; t++) {
    acc[t] = vec4<f32>(0.0);
  }
  let cacheRow0 = g * params.maxContext;  // first cache row of KV head g

  for (var k0 = kStart; k0 < kEnd; k0 += BC) {
    workgroupBarrier();  // the previous tile's phase D is done with kvs, ss and rowA

    // Phase A: stage K; keys past kEnd are zero (and masked in phase B).
    for (var t = 0u; t < KV_ROUNDS; t++) {
      let e = lid + t * WG;
      let c = e / DH4;
      let d4 = e % DH4;
      if (e < BC * DH4) {
        var val = vec4<f32>(0.0);
        if (k0 + c < kEnd) {
          val = kCache[(cacheRow0 + k0 + c) * DH4 + d4];
        }
        kvs[c * ROW4 + d4] = val;
      }
    }
    workgroupBarrier();

    // Phase B: S[r, c] for key j = k0 + c, visible to row r's token i when j ≤ p0 + i.
    for (var t = 0u; t < S_ROUNDS; t++) {
      let e = lid + t * WG;
      if (e < R * BC) {
        let r = e / BC;
        let c = e % BC;
        let i = q0 + r / G;
        let j = k0 + c;
        var sc = MASKED;
        if (j < kEnd && j <= p0 + i && i < n) {
          var dot = vec4<f32>(0.0);
          for (var d4 = 0u; d4 < DH4; d4++) {
            dot = fma(qs[r * DH4 + d4], kvs[c * ROW4 + d4], dot);
          }
          sc = (dot.x + dot.y) + (dot.z + dot.w);
        }
        ss[r * BC + c] = sc;
      }
    }
    workgroupBarrier();

    // Phase C: online softmax, one thread per row; all threads stage V over K.
    for (var r = lid; r < R; r += WG) {
      let mOld = rowM[r];
      var mNew = mOld;
      for (var c = 0u; c < BC; c++) {
        mNew = max(mNew, ss[r * BC + c]);
      }
      let alpha = exp2(mOld - mNew);  // 0 when the row saw its first visible key, 1 when m stays
      var l = 0.0;
      for (var c = 0u; c < BC; c++) {
        let sv = ss[r * BC + c];
        let p = select(0.0, exp2(sv - mNew), sv > VISIBLE_MIN);
        ss[r * BC + c] = p;
        l += p;
      }
      rowM[r] = mNew;
      rowL[r] = rowL[r] * alpha + l;
      rowA[r] = alpha;
    }
    for (var t = 0u; t < KV_ROUNDS; t++) {
      let e = lid + t * WG;
      let c = e / DH4;
      let d4 = e % DH4;
      if (e < BC * DH4) {
        var val = vec4<f32>(0.0);
        if (k0 + c < kEnd) {
          val = vCache[(cacheRow0 + k0 + c) * DH4 + d4];
        }
        kvs[c * ROW4 + d4] = val;
      }
    }
    workgroupBarrier();

    // Phase D: O ← alpha·O + P·V for this thread's outputs (row r, vec4 column d4).
    for (var t = 0u; t < OPT; t++) {
      let e = lid + t * WG;
      if (e < R * DH4) {
        let r = e / DH4;
        let d4 = e % DH4;
        var o = acc[t] * rowA[r];
        for (var c = 0u; c < BC; c++) {
          o = fma(vec4<f32>(ss[r * BC + c]), kvs[c * ROW4 + d4], o);
        }
        acc[t] = o;
      }
    }
  }
  workgroupBarrier();  // rowM and rowL final

  // Write this split's unnormalised O and (m, l) for the rows of real tokens.
  for (var t = 0u; t < OPT; t++) {
    let e = lid + t * WG;
    if (e < R * DH4) {
      let r = e / DH4;
      let d4 = e % DH4;
      let i = q0 + r / G;
      let h = g * G + r % G;
      if (i < n) {
        oPart[((s * C + i) * H + h) * DH4 + d4] = acc[t];
      }
    }
  }
  for (var r = lid; r < R; r += WG) {
    let i = q0 + r / G;
    let h = g * G + r % G;
    if (i < n) {
      mlPart[(s * C + i) * H + h] = vec2<f32>(rowM[r], rowL[r]);
    }
  }
}
