// Flash attention backward on subgroup matrices, pass 3 of 3: dK and dV (FlashAttention-2 form),
// causal, grouped-query, packed-segment masking as in attention_sgm_forward.wgsl.
//
// For batch row b, KV head g (query heads h = g·R .. g·R + R − 1), key j and every query i that
// sees it:
//   P_ij  = exp2(s₂_ij − lse₂_i),  dP_ij = dO_i · v_j,  dS_ij = P_ij · (dP_ij − delta_i)
//   dV_j  = Σ_h Σ_i P_ij · dO_i
//   dK_j  = scale · Σ_h Σ_i dS_ij · q_i
// The sums over the group's R heads run inside one workgroup (no atomics, deterministic).
// K·Qᵀ, V·dOᵀ, Pᵀ·dO and dSᵀ·Q are f16 fragment products with f32 accumulation.
//
// f16 scaling as in attention_sgm_backward_dq.wgsl: Q, K, V, dO staged with their head scales
// (one per batch row and KV group, so one scale serves all R heads of the sums), dS'' =
// DS_SCALE · sdO·sV · dS ≤ 2^14 staged as f16, P ≤ 1 staged as f16. The epilogue multiplies the dV
// fragments by 1 / sdO and the dK fragments by scale / (DS_SCALE · sdO · sV · sQ).
//
// Bindings (group 0):
//   0 params  uniform    AttentionSgmBackwardParams { tokens, qHeads, kvHeads, scale, qOff, kOff, vOff, dOOff, dsScale }
//   1 dk      read_write (B·T, Hkv·Dh) f32   output, overwritten
//   2 dv      read_write (B·T, Hkv·Dh) f32   output, overwritten
//   3 dO      read       (B·T, H·Dh) f32
//   4 q       read       (B·T, H·Dh) f32
//   5 k       read       (B·T, Hkv·Dh) f32
//   6 v       read       (B·T, Hkv·Dh) f32
//   7 segIds  read       (B·T) i32
//   8 stats   read       (B·T, H) vec2<f32>  (lse·log2 e, delta)
//   9 scales  read       f32 head scales at qOff / kOff / vOff / dOOff + b·Hkv + g
// Override constants: DH head dim (multiple of 32, ≤ 128); BQ query rows per inner tile (16 or 32).
// Workgroup: 4 subgroups of 32 invocations; subgroup sg owns keys 16·sg .. 16·sg + 15 of the
// 64-key tile: their K and V fragments in registers (loaded once) and their dK, dV fragments.
// Dispatch: (B·Hkv, ceil(T / 64)); workgroup (x, y): batch row x / Hkv, KV head x % Hkv, keys
// 64·y .. 64·y + 63 (y = 0 first: it has the most query tiles). Saves nothing.
//
// For each head of the group and each query tile of BQ rows from the first key's to the last query
// in the key tile's segment range (qEnd, counted before the loop: segment ids do not decrease):
//   A  stage Q·sQ and dO·sdO (f16) and the queries' segment ids and stats;
//   B  Sᵀ = K·Qᵀ into the scratch; lanes (lane l: key row l / 2, queries of parity l % 2) form Pᵀ,
//      staged as f16 and kept in registers;
//   C  dPᵀ = V·dOᵀ into the scratch; lanes form dS''ᵀ, staged as f16;
//   D  dV += Pᵀ·dO, dK += dS''ᵀ·Q.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);

override DH: u32 = 128u;
override BQ: u32 = 32u;

const THREADS = 128u;
const BK = 64u;                   // keys per workgroup (16 per subgroup)
const PAD = 8u;
const SPAD = 4u;
const MAX_DH = 128u;
const MAX_BQ = 32u;
const SK = MAX_DH + PAD;          // row stride of the staged K/V (at the start) and Q/dO tiles, in halves
const SQ = MAX_BQ + PAD;          // row stride of the staged Pᵀ and dSᵀ tiles, in halves
const SS = MAX_BQ + SPAD;         // row stride of the f32 scratch
const DO_OFFSET = MAX_BQ * SK;    // the dO tile follows the Q tile
const P_OFFSET = BK * SK;         // Pᵀ follows the K/V (then Q/dO) region
const DS_OFFSET = P_OFFSET + BK * SQ;
const LOG2E: f32 = 1.4426950408889634;

override NF: u32 = DH / 16u;
override DH4: u32 = DH / 4u;

struct AttentionSgmBackwardParams {
  tokens: u32,
  qHeads: u32,
  kvHeads: u32,
  scale: f32,
  qOff: u32,
  kOff: u32,
  vOff: u32,
  dOOff: u32,
  dsScale: f32,
}

@group(0) @binding(0) var<uniform> params: AttentionSgmBackwardParams;
@group(0) @binding(1) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> segIds: array<i32>;
@group(0) @binding(8) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(9) var<storage, read> scales: array<f32>;

var<workgroup> halves: array<f16, BK * SK + 2u * BK * SQ>;
var<workgroup> scratch: array<f32, BK * SS>;
var<workgroup> kseg: array<i32, BK>;
var<workgroup> qseg: array<i32, MAX_BQ>;
var<workgroup> qEndCount: array<atomic<u32>, 4>; // [0]: the queries after the key tile that see it, counted (16 bytes: see tests/kernels/workgroup-alignment.test.ts)
var<workgroup> qstat: array<vec2<f32>, MAX_BQ>; // (lse₂, delta in dP units) of the tile's queries

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

// #include "lib/attention_rows.wgsl"

// Right fragment of Qᵀ (or dOᵀ at base DO_OFFSET): queries 16·j .., head dims 16·kk .. (column-major).
fn tRight(base: u32, j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, base + j * 16u * SK + kk * 16u, true, SK);
}

// Right fragment of Q (or dO): queries 16·kb .., head dims 16·j .. (row-major).
fn rRight(base: u32, kb: u32, j: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, base + kb * 16u * SK + j * 16u, false, SK);
}

// Writes vec4 columns 8·round .. 8·round + 7 of this lane's key row of dK (isV false) or dV (true).
fn writeRound(sBase: u32, rr: u32, hh: u32, outRow: u32, round: u32, f: f32, live: bool, isV: bool) {
  for (var c4 = hh; c4 < 8u; c4 += 2u) {
    if (live) {
      let at = sBase + rr * SS + c4 * 4u;
      let val = vec4<f32>(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]) * f;
      if (isV) {
        dv[outRow + round * 8u + c4] = val;
      } else {
        dk[outRow + round * 8u + c4] = val;
      }
    }
  }
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let T = params.tokens;
  let H = params.qHeads;
  let Hkv = params.kvHeads;
  let R = H / Hkv;
  let b = wg.x / Hkv;
  let g = wg.x % Hkv;
  let k0 = wg.y * BK;
  let kEnd = min(k0 + BK, T);
  let tok0 = b * T;
  let sg = lid / 32u;
  let lane = lid % 32u;
  let rr = lane / 2u;
  let hh = lane % 2u;
  let row = sg * 16u + rr;        // this lane's key within the tile
  let kj = k0 + row;
  let live = kj < T;
  let sBase = sg * 16u * SS;
  let sQ = scales[params.qOff + b * Hkv + g];
  let sK = scales[params.kOff + b * Hkv + g];
  let sV = scales[params.vOff + b * Hkv + g];
  let sdO = scales[params.dOOff + b * Hkv + g];
  let cS = params.scale * LOG2E * (1.0 / sQ) * (1.0 / sK);
  let dScale = sdO * sV;

  for (var c = lid; c < BK; c += THREADS) {
    var s = 0;
    if (k0 + c < T) {
      s = segIds[tok0 + k0 + c];
    }
    kseg[c] = s;
  }
  if (lid == 0u) {
    atomicStore(&qEndCount[0], 0u);
  }
  // K, then V, through the Q/dO region into each subgroup's registers.
  let kBase = sg * 16u * SK;
  stageRows(&k, lid, tok0, k0, BK, Hkv, g, 0u, sK);
  workgroupBarrier();
  var k0f = Left(); var k1f = Left(); var k2f = Left(); var k3f = Left(); var k4f = Left(); var k5f = Left(); var k6f = Left(); var k7f = Left();
  k0f = subgroupMatrixLoad<Left>(&halves, kBase, false, SK);
  if (NF > 1u) { k1f = subgroupMatrixLoad<Left>(&halves, kBase + 16u, false, SK); }
  if (NF > 2u) { k2f = subgroupMatrixLoad<Left>(&halves, kBase + 32u, false, SK); }
  if (NF > 3u) { k3f = subgroupMatrixLoad<Left>(&halves, kBase + 48u, false, SK); }
  if (NF > 4u) { k4f = subgroupMatrixLoad<Left>(&halves, kBase + 64u, false, SK); }
  if (NF > 5u) { k5f = subgroupMatrixLoad<Left>(&halves, kBase + 80u, false, SK); }
  if (NF > 6u) { k6f = subgroupMatrixLoad<Left>(&halves, kBase + 96u, false, SK); }
  if (NF > 7u) { k7f = subgroupMatrixLoad<Left>(&halves, kBase + 112u, false, SK); }
  workgroupBarrier();
  stageRows(&v, lid, tok0, k0, BK, Hkv, g, 0u, sV);
  workgroupBarrier();
  var v0f = Left(); var v1f = Left(); var v2f = Left(); var v3f = Left(); var v4f = Left(); var v5f = Left(); var v6f = Left(); var v7f = Left();
  v0f = subgroupMatrixLoad<Left>(&halves, kBase, false, SK);
  if (NF > 1u) { v1f = subgroupMatrixLoad<Left>(&halves, kBase + 16u, false, SK); }
  if (NF > 2u) { v2f = subgroupMatrixLoad<Left>(&halves, kBase + 32u, false, SK); }
  if (NF > 3u) { v3f = subgroupMatrixLoad<Left>(&halves, kBase + 48u, false, SK); }
  if (NF > 4u) { v4f = subgroupMatrixLoad<Left>(&halves, kBase + 64u, false, SK); }
  if (NF > 5u) { v5f = subgroupMatrixLoad<Left>(&halves, kBase + 80u, false, SK); }
  if (NF > 6u) { v6f = subgroupMatrixLoad<Left>(&halves, kBase + 96u, false, SK); }
  if (NF > 7u) { v7f = subgroupMatrixLoad<Left>(&halves, kBase + 112u, false, SK); }
  let kMax = kseg[kEnd - k0 - 1u]; // segment ids do not decrease along a row (src/model/input-checks.ts)
  let keySeg = kseg[row];
  // qEnd: the queries that can see a key of the tile end with the last one in its segment range,
  // i.e. kEnd plus the queries after the tile whose segment is at most kMax, counted without a
  // branch per query.
  var after = 0u;
  for (var c = kEnd + lid; c < T; c += THREADS) {
    after += select(0u, 1u, segIds[tok0 + c] <= kMax);
  }
  if (after != 0u) {
    atomicAdd(&qEndCount[0], after);
  }
  let qEnd = kEnd + workgroupUniformLoad(&qEndCount[0]);

  var dk0 = Frag(); var dk1 = Frag(); var dk2 = Frag(); var dk3 = Frag(); var dk4 = Frag(); var dk5 = Frag(); var dk6 = Frag(); var dk7 = Frag();
  var dv0 = Frag(); var dv1 = Frag(); var dv2 = Frag(); var dv3 = Frag(); var dv4 = Frag(); var dv5 = Frag(); var dv6 = Frag(); var dv7 = Frag();
  var pr: array<f32, 16>; // this lane's Pᵀ values of the tile (queries hh + 2t)

  let qFirst = k0 / BQ;            // the first query tile that can see a key of this tile
  let qTiles = (qEnd + BQ - 1u) / BQ;
  for (var hi = 0u; hi < R; hi++) {
    let h = g * R + hi;
    for (var qt = qFirst; qt < qTiles; qt++) {
      let q0 = qt * BQ;
      workgroupBarrier(); // the previous tile's products (and the V fragment loads) are done

      // A: Q and dO tiles, the queries' segment ids and stats.
      stageRows(&q, lid, tok0, q0, BQ, H, h, 0u, sQ);
      stageRows(&dO, lid, tok0, q0, BQ, H, h, DO_OFFSET, sdO);
      for (var r = lid; r < BQ; r += THREADS) {
        var s = -1;
        var st = vec2<f32>(0.0);
        if (q0 + r < T) {
          s = segIds[tok0 + q0 + r];
          st = stats[(tok0 + q0 + r) * H + h];
        }
        qseg[r] = s;
        qstat[r] = vec2<f32>(st.x, st.y * dScale);
      }
      workgroupBarrier();

      // B: Sᵀ = K·Qᵀ; Pᵀ staged and kept.
      for (var j = 0u; j < BQ / 16u; j++) {
        var s = Frag();
        s = subgroupMatrixMultiplyAccumulate(k0f, tRight(0u, j, 0u), s);
        if (NF > 1u) { s = subgroupMatrixMultiplyAccumulate(k1f, tRight(0u, j, 1u), s); }
        if (NF > 2u) { s = subgroupMatrixMultiplyAccumulate(k2f, tRight(0u, j, 2u), s); }
        if (NF > 3u) { s = subgroupMatrixMultiplyAccumulate(k3f, tRight(0u, j, 3u), s); }
        if (NF > 4u) { s = subgroupMatrixMultiplyAccumulate(k4f, tRight(0u, j, 4u), s); }
        if (NF > 5u) { s = subgroupMatrixMultiplyAccumulate(k5f, tRight(0u, j, 5u), s); }
        if (NF > 6u) { s = subgroupMatrixMultiplyAccumulate(k6f, tRight(0u, j, 6u), s); }
        if (NF > 7u) { s = subgroupMatrixMultiplyAccumulate(k7f, tRight(0u, j, 7u), s); }
        subgroupMatrixStore(&scratch, sBase + j * 16u, s, false, SS);
      }
      workgroupBarrier();
      for (var t = 0u; t < BQ / 2u; t++) {
        let c = hh + 2u * t;
        let qi = q0 + c;
        let visible = live && kj <= qi && qi < T && qseg[c] == keySeg;
        let p = select(0.0, exp2(scratch[sBase + rr * SS + c] * cS - qstat[c].x), visible);
        pr[t] = p;
        halves[P_OFFSET + row * SQ + c] = f16(p);
      }
      workgroupBarrier(); // the scores are read

      // C: dPᵀ = V·dOᵀ; dS''ᵀ staged.
      for (var j = 0u; j < BQ / 16u; j++) {
        var s = Frag();
        s = subgroupMatrixMultiplyAccumulate(v0f, tRight(DO_OFFSET, j, 0u), s);
        if (NF > 1u) { s = subgroupMatrixMultiplyAccumulate(v1f, tRight(DO_OFFSET, j, 1u), s); }
        if (NF > 2u) { s = subgroupMatrixMultiplyAccumulate(v2f, tRight(DO_OFFSET, j, 2u), s); }
        if (NF > 3u) { s = subgroupMatrixMultiplyAccumulate(v3f, tRight(DO_OFFSET, j, 3u), s); }
        if (NF > 4u) { s = subgroupMatrixMultiplyAccumulate(v4f, tRight(DO_OFFSET, j, 4u), s); }
        if (NF > 5u) { s = subgroupMatrixMultiplyAccumulate(v5f, tRight(DO_OFFSET, j, 5u), s); }
        if (NF > 6u) { s = subgroupMatrixMultiplyAccumulate(v6f, tRight(DO_OFFSET, j, 6u), s); }
        if (NF > 7u) { s = subgroupMatrixMultiplyAccumulate(v7f, tRight(DO_OFFSET, j, 7u), s); }
        subgroupMatrixStore(&scratch, sBase + j * 16u, s, false, SS);
      }
      workgroupBarrier();
      for (var t = 0u; t < BQ / 2u; t++) {
        let c = hh + 2u * t;
        let ds = params.dsScale * pr[t] * (scratch[sBase + rr * SS + c] - qstat[c].y);
        halves[DS_OFFSET + row * SQ + c] = f16(ds);
      }
      workgroupBarrier();

      // D: dV += Pᵀ·dO, dK += dS''ᵀ·Q.
      for (var kb = 0u; kb < BQ / 16u; kb++) {
        let p = subgroupMatrixLoad<Left>(&halves, P_OFFSET + sg * 16u * SQ + kb * 16u, false, SQ);
        dv0 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 0u), dv0);
        if (NF > 1u) { dv1 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 1u), dv1); }
        if (NF > 2u) { dv2 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 2u), dv2); }
        if (NF > 3u) { dv3 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 3u), dv3); }
        if (NF > 4u) { dv4 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 4u), dv4); }
        if (NF > 5u) { dv5 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 5u), dv5); }
        if (NF > 6u) { dv6 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 6u), dv6); }
        if (NF > 7u) { dv7 = subgroupMatrixMultiplyAccumulate(p, rRight(DO_OFFSET, kb, 7u), dv7); }
        let d = subgroupMatrixLoad<Left>(&halves, DS_OFFSET + sg * 16u * SQ + kb * 16u, false, SQ);
        dk0 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 0u), dk0);
        if (NF > 1u) { dk1 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 1u), dk1); }
        if (NF > 2u) { dk2 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 2u), dk2); }
        if (NF > 3u) { dk3 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 3u), dk3); }
        if (NF > 4u) { dk4 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 4u), dk4); }
        if (NF > 5u) { dk5 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 5u), dk5); }
        if (NF > 6u) { dk6 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 6u), dk6); }
        if (NF > 7u) { dk7 = subgroupMatrixMultiplyAccumulate(d, rRight(0u, kb, 7u), dk7); }
      }
    }
  }

  // Epilogue: dV = acc / sdO, dK = acc · scale / (DS_SCALE · sdO · sV · sQ), two fragments at a time.
  let fV = 1.0 / sdO;
  let fK = params.scale * (1.0 / params.dsScale) * (1.0 / sQ) * (1.0 / sV) * (1.0 / sdO);
  let outRow = ((tok0 + kj) * Hkv + g) * DH4;
  workgroupBarrier();
  subgroupMatrixStore(&scratch, sBase, dv0, false, SS);
  subgroupMatrixStore(&scratch, sBase + 16u, dv1, false, SS);
  workgroupBarrier();
  writeRound(sBase, rr, hh, outRow, 0u, fV, live, true);
  workgroupBarrier();
  subgroupMatrixStore(&scratch, sBase, dk0, false, SS);
  subgroupMatrixStore(&scratch, sBase + 16u, dk1, false, SS);
  workgroupBarrier();
  writeRound(sBase, rr, hh, outRow, 0u, fK, live, false);
  if (NF > 2u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dv2, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dv3, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 1u, fV, live, true);
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dk2, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dk3, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 1u, fK, live, false);
  }
  if (NF > 4u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dv4, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dv5, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 2u, fV, live, true);
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dk4, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dk5, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 2u, fK, live, false);
  }
  if (NF > 6u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dv6, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dv7, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 3u, fV, live, true);
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, dk6, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, dk7, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 3u, fK, live, false);
  }
}
