// Flash attention forward: causal, grouped-query (GQA), with packed-segment masking.
//
// For batch row b, query head h (KV head g = h / (H / Hkv)) and query token i:
//   s_j   = scale · q[b, i, h, :] · k[b, j, g, :]          for every key j visible to i
//   visible(i, j)  ⇔  j ≤ i  and  segIds[b, j] == segIds[b, i]
//   lse   = log Σ_j exp(s_j)                               (natural log)
//   o[b, i, h, :] = Σ_j exp(s_j − lse) · v[b, j, g, :]
// Flash style: key tiles of BC keys are staged in workgroup memory and folded into a running
// (max m, sum l, accumulator O) per query row, so no T×T score matrix is ever stored. Scores are
// kept in base-2 units (q is pre-multiplied by scale·log2 e) so that exp2 does the exponentials;
// lse = (m + log2 l)·ln 2. Key tiles above the causal diagonal are never visited, and the work
// of a key tile none of whose segment ids lies in the query tile's [min, max] segment range is
// skipped (its K rows are still staged; its scores, softmax, V and P·V are not computed).
// A row with no visible key (impossible: a token sees itself) gets o = 0, lse = 0.
//
// Bindings (group 0):
//   0 params  uniform    AttentionParams { tokens, qHeads, kvHeads, scale }
//   1 o       read_write (B·T, H·Dh) f32     output, token-major like q
//   2 lse     read_write (B·T, H) f32        log-sum-exp of the scaled scores, saved for backward
//   3 q       read       (B·T, H·Dh) f32     queries after q_norm and rope
//   4 k       read       (B·T, Hkv·Dh) f32   keys after k_norm and rope
//   5 v       read       (B·T, Hkv·Dh) f32
//   6 segIds  read       (B·T) i32           example id of each token inside its batch row
// Override constants: DH head dim (multiple of 4, ≤ 256); BR queries per workgroup and BC keys
// per tile (multiples of 4); RS rows per thread block in phase B (1, 2 or 4, dividing BR); DV
// vec4 columns per row per thread in phase D (1 to 4). Workgroup size WG = (BR/RO)·OX threads
// with OX = ceil(DH/4 / DV).
// Dispatch: (B·H, ceil(T/BR)) workgroups; workgroup (x, y) handles batch row x / H, head x % H
// and query tile ceil(T/BR) − 1 − y (the longest tiles are dispatched first).
// Saves for backward: lse (the backward recomputes the scores and P = exp(s − lse)).
//
// Work split inside a workgroup, for each key tile:
//   A  all threads stage K (BC × DH) and the key segment ids, flagging the tile live when a key's
//      segment lies in the query tile's segment range;
//   B  S = Q·Kᵀ in blocks of RS rows × 4 keys per thread (rows strided by BR/RS, keys
//      contiguous), masked, written to workgroup memory;
//   C  one thread per query row: new row max, P = exp2(S − m), rescale factor alpha and row sum;
//      meanwhile all threads stage V over K;
//   D  O ← alpha·O + P·V, each thread owning RO rows (strided by BR/RO) × DV vec4 columns
//      (strided by OX) in registers.
// K/V rows are stored in workgroup memory permuted (key c at slot (c % 4)·BC/4 + c / 4) and
// padded by one vec4 per row, so that the threads of phase B, which read keys 4·sx .. 4·sx+3,
// hit distinct banks. Staging loops run a fixed number of rounds (known when the pipeline is
// created) so that the compiler unrolls them and issues all global loads before the stores.

override DH: u32 = 128u;
override BR: u32 = 32u;
override BC: u32 = 32u;
override RS: u32 = 4u;
override DV: u32 = 4u;

const RO: u32 = 4u;    // rows per thread in phase D
const MAXV: u32 = 4u;  // stride of the per-row accumulators (DV ≤ MAXV)
const MASKED: f32 = -1.0e30;       // score of an invisible key (finite: no inf arithmetic)
const VISIBLE_MIN: f32 = -1.0e29;  // a score above this is a real one
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

override DH4: u32 = DH / 4u;
override ROW4: u32 = DH4 + 1u;    // vec4 per staged Q/K/V row (one of padding)
override BC4: u32 = BC / 4u;
override SROW4: u32 = BC4 + 1u;   // vec4 per score row (one of padding)
override OX: u32 = (DH4 + DV - 1u) / DV;
override OY: u32 = BR / RO;
override WG: u32 = OX * OY;
override SYN: u32 = BR / RS;
override NSB: u32 = SYN * BC4;    // phase-B blocks
override Q_ROUNDS: u32 = (BR * DH4 + WG - 1u) / WG;
override KV_ROUNDS: u32 = (BC * DH4 + WG - 1u) / WG;

struct AttentionParams {
  tokens: u32,
  qHeads: u32,
  kvHeads: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> segIds: array<i32>;

var<workgroup> qs: array<vec4<f32>, BR * ROW4>;   // Q tile · scale · log2 e
var<workgroup> kvs: array<vec4<f32>, BC * ROW4>;  // K tile, then V tile (permuted rows)
var<workgroup> ss: array<vec4<f32>, BR * SROW4>;  // scores, then probabilities
var<workgroup> rowM: array<f32, BR>;              // running max (base-2 units)
var<workgroup> rowL: array<f32, BR>;              // running sum of exp2(s − m)
var<workgroup> rowA: array<f32, BR>;              // this tile's rescale factor exp2(m_old − m_new)
var<workgroup> qseg: array<i32, BR>;
var<workgroup> kseg: array<i32, BC>;
var<workgroup> live: atomic<u32>;                 // this key tile has work (set in phase A)

/** Workgroup-memory slot of key c of the tile. */
fn slotOf(c: u32) -> u32 {
  return (c % 4u) * BC4 + c / 4u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let T = params.tokens;
  let H = params.qHeads;
  let Hkv = params.kvHeads;
  let b = wg.x / H;
  let h = wg.x % H;
  let g = h / (H / Hkv);
  let qTiles = (T + BR - 1u) / BR;
  let q0 = (qTiles - 1u - wg.y) * BR;
  let qEnd = min(q0 + BR, T);
  let row0 = b * T;  // first token of batch row b

  // Stage the Q tile, scaled so that q·k is a base-2 exponent; rows past T are zero.
  let qScale = params.scale * LOG2E;
  for (var n = 0u; n < Q_ROUNDS; n++) {
    let e = lid + n * WG;
    let r = e / DH4;
    let d4 = e % DH4;
    var val = vec4<f32>(0.0);
    if (q0 + r < T) {
      val = q[((row0 + q0 + r) * H + h) * DH4 + d4] * qScale;
    }
    if (e < BR * DH4) {
      qs[r * ROW4 + d4] = val;
    }
  }
  for (var r = lid; r < BR; r += WG) {
    var sg = 0;
    if (q0 + r < T) {
      sg = segIds[row0 + q0 + r];
    }
    qseg[r] = sg;
    rowM[r] = MASKED;
    rowL[r] = 0.0;
  }
  if (lid == 0u) {
    atomicStore(&live, 0u);
  }
  workgroupBarrier();
  // Segment range of the query tile (rows past T excluded).
  var qMin = qseg[0];
  var qMax = qMin;
  for (var r = 1u; r < qEnd - q0; r++) {
    qMin = min(qMin, qseg[r]);
    qMax = max(qMax, qseg[r]);
  }

  let oy = lid / OX;
  let ox = lid % OX;
  var acc: array<vec4<f32>, RO * MAXV>;  // O rows oy + OY·i, columns ox + OX·j at acc[i·MAXV + j]
  for (var n = 0u; n < RO * MAXV; n++) {
    acc[n] = vec4<f32>(0.0);
  }

  let kTiles = (qEnd + BC - 1u) / BC;  // tiles at or below the causal diagonal
  for (var kt = 0u; kt < kTiles; kt++) {
    let k0 = kt * BC;
    workgroupBarrier();  // the previous tile's phase D is done with kvs, ss, rowA and live

    // Phase A: stage K and the key segment ids; keys past T are zero and never visible.
    for (var n = 0u; n < KV_ROUNDS; n++) {
      let e = lid + n * WG;
      let c = e / DH4;
      let d4 = e % DH4;
      var val = vec4<f32>(0.0);
      if (k0 + c < T) {
        val = k[((row0 + k0 + c) * Hkv + g) * DH4 + d4];
      }
      if (e < BC * DH4) {
        kvs[slotOf(c) * ROW4 + d4] = val;
      }
    }
    for (var c = lid; c < BC; c += WG) {
      var sg = 0;
      if (k0 + c < T) {
        sg = segIds[row0 + k0 + c];
        if (sg >= qMin && sg <= qMax) {
          atomicStore(&live, 1u);
        }
      }
      kseg[c] = sg;
    }
    workgroupBarrier();
    // The same value in every thread, but not uniform to the compiler: the tile's work is skipped
    // under `if (isLive)` in each phase while every thread still meets every barrier.
    let isLive = atomicLoad(&live) != 0u;

    // Phase B: S block of rows sy + SYN·i (i < RS) × keys 4·sx .. 4·sx + 3.
    if (isLive) {
      for (var blk = lid; blk < NSB; blk += WG) {
        let sy = blk / BC4;
        let sx = blk % BC4;
        var s: array<vec4<f32>, 4>;
        for (var i = 0u; i < RS; i++) {
          s[i] = vec4<f32>(0.0);
        }
        for (var d4 = 0u; d4 < DH4; d4++) {
          let ka = kvs[(0u * BC4 + sx) * ROW4 + d4];
          let kb = kvs[(1u * BC4 + sx) * ROW4 + d4];
          let kc = kvs[(2u * BC4 + sx) * ROW4 + d4];
          let kd = kvs[(3u * BC4 + sx) * ROW4 + d4];
          let kx = vec4<f32>(ka.x, kb.x, kc.x, kd.x);
          let ky = vec4<f32>(ka.y, kb.y, kc.y, kd.y);
          let kz = vec4<f32>(ka.z, kb.z, kc.z, kd.z);
          let kw = vec4<f32>(ka.w, kb.w, kc.w, kd.w);
          for (var i = 0u; i < RS; i++) {
            let qv = qs[(sy + SYN * i) * ROW4 + d4];
            var a = s[i];
            a = fma(vec4<f32>(qv.x), kx, a);
            a = fma(vec4<f32>(qv.y), ky, a);
            a = fma(vec4<f32>(qv.z), kz, a);
            a = fma(vec4<f32>(qv.w), kw, a);
            s[i] = a;
          }
        }
        let kIdx = vec4<u32>(k0 + 4u * sx) + vec4<u32>(0u, 1u, 2u, 3u);
        let kSg = vec4<i32>(kseg[4u * sx], kseg[4u * sx + 1u], kseg[4u * sx + 2u], kseg[4u * sx + 3u]);
        for (var i = 0u; i < RS; i++) {
          let r = sy + SYN * i;
          let qi = q0 + r;
          let visible = (kIdx <= vec4<u32>(qi)) & (kSg == vec4<i32>(qseg[r])) & vec4<bool>(qi < T);
          ss[r * SROW4 + sx] = select(vec4<f32>(MASKED), s[i], visible);
        }
      }
    }
    workgroupBarrier();

    // Phase C: online softmax, one thread per query row; all threads stage V over K.
    if (isLive) {
      for (var r = lid; r < BR; r += WG) {
        let mOld = rowM[r];
        var mNew = mOld;
        for (var c4 = 0u; c4 < BC4; c4++) {
          let sv = ss[r * SROW4 + c4];
          mNew = max(mNew, max(max(sv.x, sv.y), max(sv.z, sv.w)));
        }
        let alpha = exp2(mOld - mNew);  // 0 when the row saw its first visible key, 1 when m stays
        var l = 0.0;
        for (var c4 = 0u; c4 < BC4; c4++) {
          let sv = ss[r * SROW4 + c4];
          let p = select(vec4<f32>(0.0), exp2(sv - mNew), sv > vec4<f32>(VISIBLE_MIN));
          ss[r * SROW4 + c4] = p;
          l += (p.x + p.y) + (p.z + p.w);
        }
        rowM[r] = mNew;
        rowL[r] = rowL[r] * alpha + l;
        rowA[r] = alpha;
      }
      for (var n = 0u; n < KV_ROUNDS; n++) {
        let e = lid + n * WG;
        let c = e / DH4;
        let d4 = e % DH4;
        var val = vec4<f32>(0.0);
        if (k0 + c < T) {
          val = v[((row0 + k0 + c) * Hkv + g) * DH4 + d4];
        }
        if (e < BC * DH4) {
          kvs[slotOf(c) * ROW4 + d4] = val;
        }
      }
    }
    workgroupBarrier();

    // Phase D: O ← alpha·O + P·V for rows oy + OY·i, columns ox + OX·j.
    if (lid == 0u) {
      atomicStore(&live, 0u);  // for the next tile (every thread read it before barrier B)
    }
    if (isLive) {
      for (var i = 0u; i < RO; i++) {
        let alpha = rowA[oy + OY * i];
        for (var j = 0u; j < DV; j++) {
          acc[i * MAXV + j] *= alpha;
        }
      }
      for (var c4 = 0u; c4 < BC4; c4++) {
        var p: array<vec4<f32>, RO>;
        for (var i = 0u; i < RO; i++) {
          p[i] = ss[(oy + OY * i) * SROW4 + c4];
        }
        for (var cc = 0u; cc < 4u; cc++) {
          let slot = cc * BC4 + c4;
          for (var j = 0u; j < DV; j++) {
            let d4 = ox + OX * j;
            if (d4 < DH4) {
              let vv = kvs[slot * ROW4 + d4];
              for (var i = 0u; i < RO; i++) {
                acc[i * MAXV + j] = fma(vec4<f32>(p[i][cc]), vv, acc[i * MAXV + j]);
              }
            }
          }
        }
      }
    }
  }
  workgroupBarrier();  // rowL and rowM final

  for (var i = 0u; i < RO; i++) {
    let r = oy + OY * i;
    if (q0 + r < T) {
      let l = rowL[r];
      let inv = select(0.0, 1.0 / l, l > 0.0);
      for (var j = 0u; j < DV; j++) {
        let d4 = ox + OX * j;
        if (d4 < DH4) {
          o[((row0 + q0 + r) * H + h) * DH4 + d4] = acc[i * MAXV + j] * inv;
        }
      }
    }
  }
  for (var r = lid; r < BR; r += WG) {
    if (q0 + r < T) {
      let l = rowL[r];
      lse[(row0 + q0 + r) * H + h] = select(0.0, (rowM[r] + log2(l)) * LN2, l > 0.0);
    }
  }
}
