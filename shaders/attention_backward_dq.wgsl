// Flash attention backward, pass 3 of 3: dQ (FlashAttention-2 form), causal, grouped-query,
// packed-segment masking as in attention_forward.wgsl.
//
// For batch row b, query head h (KV head g = h / (H / Hkv)) and query i, over the keys j it sees
// (visible(i, j) ⇔ j ≤ i, segIds[b, j] == segIds[b, i]):
//   1. P_ij  = exp(scale · q_i · k_j − lse_i)          recomputed from the forward's lse
//   2. dP_ij = dO_i · v_j
//   3. dS_ij = P_ij · (dP_ij − delta_i)                delta from attention_backward_delta.wgsl
//   4. dQ_i  = scale · Σ_j dS_ij · k_j
// Exponentials in base 2: P = exp2(q·k · scale·log2 e − lse · log2 e).
//
// Bindings (group 0):
//   0 params  uniform    AttentionBackwardParams { batch, tokens, qHeads, kvHeads, scale }
//   1 dq      read_write (B·T, H·Dh) f32     output, overwritten
//   2 dO      read       (B·T, H·Dh) f32     gradient of the attention output
//   3 q       read       (B·T, H·Dh) f32     the forward's queries (after q_norm and rope)
//   4 k       read       (B·T, Hkv·Dh) f32   the forward's keys (after k_norm and rope)
//   5 v       read       (B·T, Hkv·Dh) f32
//   6 segIds  read       (B·T) i32           example id of each token inside its batch row
//   7 lse     read       (B·T, H) f32        saved by the forward (natural log)
//   8 delta   read       (B·T, H) f32        rowsum(dO ⊙ O) from pass 1
// Override constants: DH head dim (multiple of 4), BR query rows per workgroup (a multiple of RB
// and of RQ), BC keys per tile (multiple of 4), RB rows per thread block of phase C (1, 2 or 4),
// RQ rows per thread in phase D (dividing BR, at most 8).
// Workgroup size WG = (BR / RQ)·(DH/4): in phase D thread (ry, cx) owns vec4 column cx of the rows
// ry + (BR/RQ)·i (i < RQ) of dQ, in registers.
// Dispatch: (B·H, ceil(T/BR)) workgroups; workgroup (x, y) handles batch row x / H, head x % H
// and query tile ceil(T/BR) − 1 − y (the longest tiles are dispatched first).
// Saves nothing.
//
// Work split: Q, dO and the rows' lse·log2 e, delta and segment ids are staged once. Then for each
// key tile of BC keys at or below the causal diagonal:
//   A  stage the keys' segment ids; flag the tile live when one lies in the query tile's
//      [min, max] segment range (a dead tile adds nothing and is skipped);
//   B  (live) stage K and V;
//   C  (live) S and dP in blocks of RB rows (strided by BR/RB) × 4 keys per thread, masked;
//      scale·dS written to workgroup memory;
//   D  (live) dQ += (scale·dS)·K, keys in increasing order, so each row's sum runs over its keys
//      in token order whatever the tiling (packed = alone, bit for bit).
// K/V rows sit in workgroup memory permuted (key c at slot (c % 4)·BC/4 + c / 4) and padded by
// one vec4, so that phase C's threads, which read keys 4·sx .. 4·sx + 3, hit distinct banks.

override DH: u32 = 128u;
override BR: u32 = 16u;
override BC: u32 = 16u;
override RB: u32 = 2u;
override RQ: u32 = 8u;

const LOG2E: f32 = 1.4426950408889634;

override DH4: u32 = DH / 4u;
override ROW4: u32 = DH4 + 1u;   // vec4 per staged row (one of padding)
override BC4: u32 = BC / 4u;
override RY: u32 = BR / RQ;
override WG: u32 = RY * DH4;
override SY: u32 = BR / RB;
override NSB: u32 = SY * BC4;    // phase-C blocks
override Q_ROUNDS: u32 = (BR * DH4 + WG - 1u) / WG;
override KV_ROUNDS: u32 = (BC * DH4 + WG - 1u) / WG;

struct AttentionBackwardParams {
  batch: u32,
  tokens: u32,
  qHeads: u32,
  kvHeads: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: AttentionBackwardParams;
@group(0) @binding(1) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> segIds: array<i32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read> delta: array<f32>;

var<workgroup> qs: array<vec4<f32>, BR * ROW4>;   // Q tile
var<workgroup> gs: array<vec4<f32>, BR * ROW4>;   // dO tile
var<workgroup> ks: array<vec4<f32>, BC * ROW4>;   // K tile (permuted rows)
var<workgroup> vs: array<vec4<f32>, BC * ROW4>;   // V tile (permuted rows)
var<workgroup> dss: array<vec4<f32>, BR * BC4>;   // scale·dS, key c of row r at [r·BC4 + c/4][c % 4]
var<workgroup> qlse: array<f32, BR>;              // lse · log2 e
var<workgroup> qdelta: array<f32, BR>;
var<workgroup> qseg: array<i32, BR>;
var<workgroup> kseg: array<i32, BC>;
var<workgroup> live: atomic<u32>;                 // this key tile has work (set in phase A)

/** Workgroup-memory slot of key c of the tile. */
fn slotOf(c: u32) -> u32 {
  return (c % 4u) * BC4 + c / 4u;
}

/**
 * acc + (x·a, x·b, x·c, x·d): four fma chains, one per key, in the order x, y, z, w. (Written per
 * component: the same arithmetic as fma with transposed vec4s, and lavapipe compiles it 3× faster.)
 */
fn dot4(x: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
  var r = acc;
  r.x = fma(x.w, a.w, fma(x.z, a.z, fma(x.y, a.y, fma(x.x, a.x, r.x))));
  r.y = fma(x.w, b.w, fma(x.z, b.z, fma(x.y, b.y, fma(x.x, b.x, r.y))));
  r.z = fma(x.w, c.w, fma(x.z, c.z, fma(x.y, c.y, fma(x.x, c.x, r.z))));
  r.w = fma(x.w, d.w, fma(x.z, d.z, fma(x.y, d.y, fma(x.x, d.x, r.w))));
  return r;
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
  let qRows = min(BR, T - q0);
  let row0 = b * T;  // first token of batch row b
  let c2 = params.scale * LOG2E;

  // Stage Q, dO and the row statistics; rows past T are zero and see no key.
  for (var n = 0u; n < Q_ROUNDS; n++) {
    let e = lid + n * WG;
    let r = e / DH4;
    let d4 = e % DH4;
    var qv = vec4<f32>(0.0);
    var gv = vec4<f32>(0.0);
    if (e < BR * DH4 && r < qRows) {
      let at = ((row0 + q0 + r) * H + h) * DH4 + d4;
      qv = q[at];
      gv = dO[at];
    }
    if (e < BR * DH4) {
      qs[r * ROW4 + d4] = qv;
      gs[r * ROW4 + d4] = gv;
    }
  }
  for (var r = lid; r < BR; r += WG) {
    var sg = 0;
    var l2 = 0.0;
    var dl = 0.0;
    if (r < qRows) {
      let n = row0 + q0 + r;
      sg = segIds[n];
      l2 = lse[n * H + h] * LOG2E;
      dl = delta[n * H + h];
    }
    qseg[r] = sg;
    qlse[r] = l2;
    qdelta[r] = dl;
  }
  if (lid == 0u) {
    atomicStore(&live, 0u);
  }
  workgroupBarrier();
  // Segment range of the query tile (rows past T excluded).
  var qMin = qseg[0];
  var qMax = qMin;
  for (var r = 1u; r < qRows; r++) {
    qMin = min(qMin, qseg[r]);
    qMax = max(qMax, qseg[r]);
  }

  let cx = lid % DH4;
  let ry = lid / DH4;
  var acc: array<vec4<f32>, 8>;  // rows ry + RY·i (i < RQ) × vec4 column cx
  for (var i = 0u; i < RQ; i++) {
    acc[i] = vec4<f32>(0.0);
  }

  let qEnd = q0 + qRows;
  let kTiles = (qEnd + BC - 1u) / BC;  // tiles at or below the causal diagonal
  for (var kt = 0u; kt < kTiles; kt++) {
    let k0 = kt * BC;
    let kRows = min(BC, qEnd - k0);  // keys after the last query row are never visible
    workgroupBarrier();  // the previous tile's phase D is done with ks, dss and kseg

    // Phase A: key segment ids; the tile is live when one meets the query tile's range.
    for (var c = lid; c < BC; c += WG) {
      var sg = 0;
      if (c < kRows) {
        sg = segIds[row0 + k0 + c];
        if (sg >= qMin && sg <= qMax) {
          atomicStore(&live, 1u);
        }
      }
      kseg[c] = sg;
    }
    workgroupBarrier();
    // The same value in every thread; not a uniform value to the compiler, so the work is skipped
    // under `isLive` inside each phase while every thread still meets each barrier.
    let isLive = atomicLoad(&live) != 0u;

    // Phase B: stage K and V; keys past kRows are zero (and masked below).
    for (var n = 0u; n < KV_ROUNDS && isLive; n++) {
      let e = lid + n * WG;
      let c = e / DH4;
      let d4 = e % DH4;
      var kv = vec4<f32>(0.0);
      var vv = vec4<f32>(0.0);
      if (e < BC * DH4 && c < kRows) {
        let at = ((row0 + k0 + c) * Hkv + g) * DH4 + d4;
        kv = k[at];
        vv = v[at];
      }
      if (e < BC * DH4) {
        ks[slotOf(c) * ROW4 + d4] = kv;
        vs[slotOf(c) * ROW4 + d4] = vv;
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      atomicStore(&live, 0u);  // for the next tile (every thread read it before this barrier)
    }

    // Phase C: S = Q·Kᵀ and dP = dO·Vᵀ for rows sy + SY·i (i < RB) × keys 4·sx .. 4·sx + 3.
    for (var blk = lid; blk < NSB && isLive; blk += WG) {
      let sy = blk / BC4;
      let sx = blk % BC4;
      var s: array<vec4<f32>, 4>;
      var dp: array<vec4<f32>, 4>;
      for (var i = 0u; i < RB; i++) {
        s[i] = vec4<f32>(0.0);
        dp[i] = vec4<f32>(0.0);
      }
      for (var d4 = 0u; d4 < DH4; d4++) {
        let ka = ks[(0u * BC4 + sx) * ROW4 + d4];
        let kb = ks[(1u * BC4 + sx) * ROW4 + d4];
        let kc = ks[(2u * BC4 + sx) * ROW4 + d4];
        let kd = ks[(3u * BC4 + sx) * ROW4 + d4];
        let va = vs[(0u * BC4 + sx) * ROW4 + d4];
        let vb = vs[(1u * BC4 + sx) * ROW4 + d4];
        let vc = vs[(2u * BC4 + sx) * ROW4 + d4];
        let vd = vs[(3u * BC4 + sx) * ROW4 + d4];
        for (var i = 0u; i < RB; i++) {
          let r = sy + SY * i;
          let qv = qs[r * ROW4 + d4];
          let gv = gs[r * ROW4 + d4];
          s[i] = dot4(qv, ka, kb, kc, kd, s[i]);
          dp[i] = dot4(gv, va, vb, vc, vd, dp[i]);
        }
      }
      let kIdx = vec4<u32>(k0 + 4u * sx) + vec4<u32>(0u, 1u, 2u, 3u);
      let kSg = vec4<i32>(kseg[4u * sx], kseg[4u * sx + 1u], kseg[4u * sx + 2u], kseg[4u * sx + 3u]);
      for (var i = 0u; i < RB; i++) {
        let r = sy + SY * i;
        let qi = q0 + r;
        let visible = (kIdx <= vec4<u32>(qi)) & (kSg == vec4<i32>(qseg[r])) & vec4<bool>(qi < T);
        let p = select(vec4<f32>(0.0), exp2(s[i] * c2 - vec4<f32>(qlse[r])), visible);
        dss[r * BC4 + sx] = p * (dp[i] - vec4<f32>(qdelta[r])) * params.scale;
      }
    }
    workgroupBarrier();

    // Phase D: dQ += (scale·dS)·K over the tile's keys in order (key 4·c4 + e).
    let kGroups = (kRows + 3u) / 4u;
    for (var c4 = 0u; c4 < kGroups && isLive; c4++) {
      let k0v = ks[(0u * BC4 + c4) * ROW4 + cx];
      let k1v = ks[(1u * BC4 + c4) * ROW4 + cx];
      let k2v = ks[(2u * BC4 + c4) * ROW4 + cx];
      let k3v = ks[(3u * BC4 + c4) * ROW4 + cx];
      for (var i = 0u; i < RQ; i++) {
        let dsv = dss[(ry + RY * i) * BC4 + c4];
        acc[i] = fma(vec4<f32>(dsv.w), k3v, fma(vec4<f32>(dsv.z), k2v, fma(vec4<f32>(dsv.y), k1v, fma(vec4<f32>(dsv.x), k0v, acc[i]))));
      }
    }
  }

  for (var i = 0u; i < RQ; i++) {
    let r = ry + RY * i;
    if (r < qRows) {
      dq[((row0 + q0 + r) * H + h) * DH4 + cx] = acc[i];
    }
  }
}
