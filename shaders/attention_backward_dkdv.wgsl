// Flash attention backward, pass 2 of 3: dK and dV (FlashAttention-2 form), causal, grouped-query,
// packed-segment masking as in attention_forward.wgsl.
//
// For batch row b, KV head g (query heads h = g·R .. g·R + R − 1, R = H / Hkv), key j and every
// query i that sees j (visible(i, j) ⇔ j ≤ i, segIds[b, j] == segIds[b, i]):
//   1. P_ij  = exp(scale · q_i · k_j − lse_i)          recomputed from the forward's lse
//   2. dP_ij = dO_i · v_j
//   3. dS_ij = P_ij · (dP_ij − delta_i)                delta from attention_backward_delta.wgsl
//   4. dV_j  = Σ_h Σ_i P_ij · dO_i
//   5. dK_j  = scale · Σ_h Σ_i dS_ij · q_i
// GQA: the sums of 4 and 5 run over the R query heads of the KV head inside one workgroup, so
// there are no atomics and the result is deterministic. Exponentials in base 2:
// P = exp2(q·k · scale·log2 e − lse · log2 e).
//
// Bindings (group 0):
//   0 params  uniform    AttentionBackwardParams { batch, tokens, qHeads, kvHeads, scale }
//   1 dk      read_write (B·T, Hkv·Dh) f32   output, overwritten
//   2 dv      read_write (B·T, Hkv·Dh) f32   output, overwritten
//   3 dO      read       (B·T, H·Dh) f32     gradient of the attention output
//   4 q       read       (B·T, H·Dh) f32     the forward's queries (after q_norm and rope)
//   5 k       read       (B·T, Hkv·Dh) f32   the forward's keys (after k_norm and rope)
//   6 v       read       (B·T, Hkv·Dh) f32
//   7 segIds  read       (B·T) i32           example id of each token inside its batch row
//   8 lse     read       (B·T, H) f32        saved by the forward (natural log)
//   9 delta   read       (B·T, H) f32        rowsum(dO ⊙ O) from pass 1
// Override constants: DH head dim (multiple of 4), BC keys per workgroup (multiple of 4), BR query
// rows per inner tile (a multiple of RB), RB rows per thread block of phase B (1, 2 or 4), KG
// groups of 4 keys per thread in phase C (1 or 2, dividing BC/4).
// Workgroup size WG = (BC/4 / KG)·(DH/4): in phase C thread (cy, cx) owns vec4 column cx of the
// keys 4·(cy + CY·n) .. 4·(cy + CY·n) + 3 (n < KG), for both dK and dV, in registers.
// Dispatch: (B·Hkv, ceil(T/BC)) workgroups; workgroup (x, y) handles batch row x / Hkv, KV head
// x % Hkv and keys y·BC .. y·BC + BC − 1 (y = 0 first: it has the most query tiles to visit).
// Saves nothing.
//
// Work split: K and V of the workgroup's keys are staged once. Then for each query head of the
// group and each query tile of BR rows at or after the first key (earlier ones see none of them):
//   A  stage the rows' segment ids, lse·log2 e and delta; flag the tile live when a row's segment
//      lies in the key tile's [min, max] segment range (a dead tile adds nothing and is skipped);
//   B  (live) stage Q and dO of the tile;
//   C  (live) S and dP in blocks of RB rows (strided by BR/RB) × 4 keys per thread, masked; P and
//      scale·dS written to workgroup memory;
//   D  (live) dV += Pᵀ·dO and dK += (scale·dS)ᵀ·Q, query rows in increasing order, so each key's
//      sums run over its queries in token order whatever the tiling (packed = alone, bit for bit).
// K/V rows sit in workgroup memory permuted (key c at slot (c % 4)·BC/4 + c / 4) and padded by
// one vec4, so that phase C's threads, which read keys 4·sx .. 4·sx + 3, hit distinct banks.

override DH: u32 = 128u;
override BC: u32 = 16u;
override BR: u32 = 16u;
override RB: u32 = 2u;
override KG: u32 = 2u;

const LOG2E: f32 = 1.4426950408889634;

override DH4: u32 = DH / 4u;
override ROW4: u32 = DH4 + 1u;   // vec4 per staged row (one of padding)
override BC4: u32 = BC / 4u;
override CY: u32 = BC4 / KG;
override WG: u32 = CY * DH4;
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
@group(0) @binding(1) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> segIds: array<i32>;
@group(0) @binding(8) var<storage, read> lse: array<f32>;
@group(0) @binding(9) var<storage, read> delta: array<f32>;

var<workgroup> ks: array<vec4<f32>, BC * ROW4>;   // K of the workgroup's keys (permuted rows)
var<workgroup> vs: array<vec4<f32>, BC * ROW4>;   // V of the workgroup's keys (permuted rows)
var<workgroup> qs: array<vec4<f32>, BR * ROW4>;   // Q tile
var<workgroup> gs: array<vec4<f32>, BR * ROW4>;   // dO tile
var<workgroup> ps: array<vec4<f32>, BR * BC4>;    // P, key c of row r at [r·BC4 + c/4][c % 4]
var<workgroup> dss: array<vec4<f32>, BR * BC4>;   // scale·dS, same layout
var<workgroup> qlse: array<f32, BR>;              // lse · log2 e
var<workgroup> qdelta: array<f32, BR>;
var<workgroup> qseg: array<i32, BR>;
var<workgroup> kseg: array<i32, BC>;
var<workgroup> live: atomic<u32>;                 // this query tile has work (set in phase A)

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
  let R = H / Hkv;
  let b = wg.x / Hkv;
  let g = wg.x % Hkv;
  let k0 = wg.y * BC;
  let kRows = min(BC, T - k0);
  let row0 = b * T;  // first token of batch row b
  let c2 = params.scale * LOG2E;

  // Stage K and V of the workgroup's keys; keys past T are zero and never visible.
  for (var n = 0u; n < KV_ROUNDS; n++) {
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
  for (var c = lid; c < BC; c += WG) {
    var sg = 0;
    if (c < kRows) {
      sg = segIds[row0 + k0 + c];
    }
    kseg[c] = sg;
  }
  if (lid == 0u) {
    atomicStore(&live, 0u);
  }
  workgroupBarrier();
  // Segment range of the key tile (keys past T excluded).
  var kMin = kseg[0];
  var kMax = kMin;
  for (var c = 1u; c < kRows; c++) {
    kMin = min(kMin, kseg[c]);
    kMax = max(kMax, kseg[c]);
  }

  let cx = lid % DH4;
  let cy = lid / DH4;
  var accK: array<vec4<f32>, 8>;  // (4·KG keys) × vec4 column cx
  var accV: array<vec4<f32>, 8>;
  for (var n = 0u; n < 4u * KG; n++) {
    accK[n] = vec4<f32>(0.0);
    accV[n] = vec4<f32>(0.0);
  }

  let qTiles = (T + BR - 1u) / BR;
  for (var hh = 0u; hh < R; hh++) {
    let h = g * R + hh;
    for (var qt = k0 / BR; qt < qTiles; qt++) {
      let q0 = qt * BR;
      let qRows = min(BR, T - q0);
      workgroupBarrier();  // the previous tile's phase D is done with qs, gs, ps, dss and the stats

      // Phase A: row statistics; the tile is live when a row's segment meets the key tile's range.
      for (var r = lid; r < BR; r += WG) {
        var sg = 0;
        var l2 = 0.0;
        var dl = 0.0;
        if (r < qRows) {
          let n = row0 + q0 + r;
          sg = segIds[n];
          l2 = lse[n * H + h] * LOG2E;
          dl = delta[n * H + h];
          if (sg >= kMin && sg <= kMax) {
            atomicStore(&live, 1u);
          }
        }
        qseg[r] = sg;
        qlse[r] = l2;
        qdelta[r] = dl;
      }
      workgroupBarrier();
      // The same value in every thread; not a uniform value to the compiler, so the work is skipped
      // under `isLive` inside each phase while every thread still meets each barrier.
      let isLive = atomicLoad(&live) != 0u;

      // Phase B: stage Q and dO; rows past T are zero.
      for (var n = 0u; n < Q_ROUNDS && isLive; n++) {
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
          ps[r * BC4 + sx] = p;
          dss[r * BC4 + sx] = p * (dp[i] - vec4<f32>(qdelta[r])) * params.scale;
        }
      }
      workgroupBarrier();

      // Phase D: dV += Pᵀ·dO, dK += (scale·dS)ᵀ·Q over the tile's rows in order.
      for (var r = 0u; r < qRows && isLive; r++) {
        let gv = gs[r * ROW4 + cx];
        let qv = qs[r * ROW4 + cx];
        for (var n = 0u; n < KG; n++) {
          let grp = cy + CY * n;
          let pv = ps[r * BC4 + grp];
          let dsv = dss[r * BC4 + grp];
          accV[4u * n] = fma(vec4<f32>(pv.x), gv, accV[4u * n]);
          accV[4u * n + 1u] = fma(vec4<f32>(pv.y), gv, accV[4u * n + 1u]);
          accV[4u * n + 2u] = fma(vec4<f32>(pv.z), gv, accV[4u * n + 2u]);
          accV[4u * n + 3u] = fma(vec4<f32>(pv.w), gv, accV[4u * n + 3u]);
          accK[4u * n] = fma(vec4<f32>(dsv.x), qv, accK[4u * n]);
          accK[4u * n + 1u] = fma(vec4<f32>(dsv.y), qv, accK[4u * n + 1u]);
          accK[4u * n + 2u] = fma(vec4<f32>(dsv.z), qv, accK[4u * n + 2u]);
          accK[4u * n + 3u] = fma(vec4<f32>(dsv.w), qv, accK[4u * n + 3u]);
        }
      }
    }
  }

  for (var n = 0u; n < KG; n++) {
    for (var e = 0u; e < 4u; e++) {
      let c = 4u * (cy + CY * n) + e;
      if (c < kRows) {
        let at = ((row0 + k0 + c) * Hkv + g) * DH4 + cx;
        dk[at] = accK[4u * n + e];
        dv[at] = accV[4u * n + e];
      }
    }
  }
}
