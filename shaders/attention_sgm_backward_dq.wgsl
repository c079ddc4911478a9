// Flash attention backward on subgroup matrices, pass 2 of 3: dQ (FlashAttention-2 form), causal,
// grouped-query, packed-segment masking as in attention_sgm_forward.wgsl.
//
// For batch row b, query head h (KV head g = h / R, R = H / Hkv), query i and the keys j it sees:
//   P_ij  = exp2(s₂_ij − lse₂_i),   s₂ = scale·log2(e) · q_i·k_j     (stats from pass 1)
//   dP_ij = dO_i · v_j
//   dS_ij = P_ij · (dP_ij − delta_i)
//   dQ_i  = scale · Σ_j dS_ij · k_j
// QKᵀ, dO·Vᵀ and dS·K are f16 fragment products with f32 accumulation.
//
// f16 without overflow or underflow (issue 11 item 4): Q, K, V, dO are staged as f16(x·s) with the
// power-of-two head scales sQ, sK, sV, sdO of their batch row and KV group (attention-sgm.ts,
// attentionScaleLayout). The dP fragment then holds sdO·sV·dP; dS is formed in f32 as
//   dS'' = DS_SCALE · P · (dP' − sdO·sV·delta)  =  DS_SCALE · sdO·sV · dS
// where |dP'| and |sdO·sV·delta| are at most Dh·2^28 (each staged element is at most 2^14 and
// |delta| ≤ Σ_d |dO_d|·max|v|), so DS_SCALE = 2^-(15 + ceil(log2 Dh)) (params.dsScale, set by the
// host) keeps |dS''| ≤ 2^14 before it is rounded to f16; values it pushes under f16's subnormals
// are below 2^-38 of that bound. The epilogue multiplies the dQ fragments by
// scale / (DS_SCALE · sdO · sV · sK).
//
// Bindings (group 0):
//   0 params  uniform    AttentionSgmBackwardParams { tokens, qHeads, kvHeads, scale, qOff, kOff, vOff, dOOff, dsScale }
//   1 dq      read_write (B·T, H·Dh) f32     output, overwritten
//   2 dO      read       (B·T, H·Dh) f32     gradient of the attention output
//   3 q       read       (B·T, H·Dh) f32     the forward's queries (after q_norm and rope)
//   4 k       read       (B·T, Hkv·Dh) f32
//   5 v       read       (B·T, Hkv·Dh) f32
//   6 segIds  read       (B·T) i32
//   7 stats   read       (B·T, H) vec2<f32>  (lse·log2 e, delta) from attention_sgm_backward_stats.wgsl
//   8 scales  read       f32 head scales at qOff / kOff / vOff / dOOff + b·Hkv + g
// Override constants: DH head dim (multiple of 32, ≤ 128: dQ leaves in rounds of two fragments); BC keys per tile (16 or 32).
// Workgroup: 4 subgroups of 32 invocations; subgroup sg owns query rows 16·sg .. 16·sg + 15 of the
// 64-row tile, its Q and dO fragments in registers for the whole key loop, and its dQ fragments.
// Dispatch: (B·H, ceil(T / 64)); workgroup (x, y): batch row x / H, head x % H, query tile
// ceil(T/64) − 1 − y. Saves nothing.
//
// Per key tile, from the tile of the first key in the query tile's segment range (kStart, counted
// before the loop: segment ids do not decrease along a row) to the diagonal:
//   A  stage K·sK and V·sV (f16, rows padded by 8 halves) and the key segment ids;
//   B  S = Q·Kᵀ into the subgroup's rows of the f32 scratch; lanes (lane l: row l / 2, columns of
//      parity l % 2) form P in registers;
//   C  dP = dO·Vᵀ into the scratch; lanes form dS'' and stage it as f16;
//   D  dQ += dS''·K.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);

override DH: u32 = 128u;
override BC: u32 = 32u;

const THREADS = 128u;
const BR = 64u;
const PAD = 8u;
const SPAD = 4u;
const MAX_DH = 128u;
const MAX_BC = 32u;
const SK = MAX_DH + PAD;          // row stride of the staged Q/dO/K/V tiles, in halves
const SP = MAX_BC + PAD;          // row stride of the staged dS tile, in halves
const SS = MAX_BC + SPAD;         // row stride of the f32 scratch
const V_OFFSET = MAX_BC * SK;     // the V tile follows the K tile
const DS_OFFSET = BR * SK;        // the dS tile follows the Q/dO (later K, V) region
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
@group(0) @binding(1) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> dO: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> segIds: array<i32>;
@group(0) @binding(7) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(8) var<storage, read> scales: array<f32>;

var<workgroup> halves: array<f16, BR * SK + BR * SP>;
var<workgroup> scratch: array<f32, BR * SS>;
var<workgroup> qseg: array<i32, BR>;
var<workgroup> kseg: array<i32, MAX_BC>;
var<workgroup> kStartCount: array<atomic<u32>, 4>; // [0]: kStart, counted (16 bytes: see tests/kernels/workgroup-alignment.test.ts)

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

// #include "lib/attention_rows.wgsl"

// Right fragment of Kᵀ (or Vᵀ at base V_OFFSET): keys 16·j .., head dims 16·kk .. (column-major).
fn tRight(base: u32, j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, base + j * 16u * SK + kk * 16u, true, SK);
}

// Right fragment of K: keys 16·kb .., head dims 16·j .. (row-major).
fn kRight(kb: u32, j: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, kb * 16u * SK + j * 16u, false, SK);
}

// Writes vec4 columns 8·round .. 8·round + 7 of this lane's dQ row from the scratch (two fragments).
fn writeRound(sBase: u32, rr: u32, hh: u32, outRow: u32, round: u32, f: f32, live: bool) {
  for (var c4 = hh; c4 < 8u; c4 += 2u) {
    if (live) {
      let at = sBase + rr * SS + c4 * 4u;
      dq[outRow + round * 8u + c4] = vec4<f32>(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]) * f;
    }
  }
}

@compute @workgroup_size(THREADS)
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
  let tok0 = b * T;
  let sg = lid / 32u;
  let lane = lid % 32u;
  let rr = lane / 2u;
  let hh = lane % 2u;
  let row = sg * 16u + rr;
  let qi = q0 + row;
  let live = qi < T;
  let sBase = sg * 16u * SS;
  let sQ = scales[params.qOff + b * Hkv + g];
  let sK = scales[params.kOff + b * Hkv + g];
  let sV = scales[params.vOff + b * Hkv + g];
  let sdO = scales[params.dOOff + b * Hkv + g];
  let cS = params.scale * LOG2E * (1.0 / sQ) * (1.0 / sK);
  var st = vec2<f32>(0.0);
  if (live) {
    st = stats[(tok0 + qi) * H + h];
  }
  let lse2 = st.x;
  let deltaS = st.y * sdO * sV; // delta in the units of the dP fragment

  for (var r = lid; r < BR; r += THREADS) {
    var s = 0;
    if (q0 + r < T) {
      s = segIds[tok0 + q0 + r];
    }
    qseg[r] = s;
  }
  if (lid == 0u) {
    atomicStore(&kStartCount[0], 0u);
  }
  // Q, then dO, through the K/V region into each subgroup's registers.
  let qBase = sg * 16u * SK;
  stageRows(&q, lid, tok0, q0, BR, H, h, 0u, sQ);
  workgroupBarrier();
  var q0f = Left(); var q1f = Left(); var q2f = Left(); var q3f = Left(); var q4f = Left(); var q5f = Left(); var q6f = Left(); var q7f = Left();
  q0f = subgroupMatrixLoad<Left>(&halves, qBase, false, SK);
  if (NF > 1u) { q1f = subgroupMatrixLoad<Left>(&halves, qBase + 16u, false, SK); }
  if (NF > 2u) { q2f = subgroupMatrixLoad<Left>(&halves, qBase + 32u, false, SK); }
  if (NF > 3u) { q3f = subgroupMatrixLoad<Left>(&halves, qBase + 48u, false, SK); }
  if (NF > 4u) { q4f = subgroupMatrixLoad<Left>(&halves, qBase + 64u, false, SK); }
  if (NF > 5u) { q5f = subgroupMatrixLoad<Left>(&halves, qBase + 80u, false, SK); }
  if (NF > 6u) { q6f = subgroupMatrixLoad<Left>(&halves, qBase + 96u, false, SK); }
  if (NF > 7u) { q7f = subgroupMatrixLoad<Left>(&halves, qBase + 112u, false, SK); }
  workgroupBarrier();
  stageRows(&dO, lid, tok0, q0, BR, H, h, 0u, sdO);
  workgroupBarrier();
  var d0f = Left(); var d1f = Left(); var d2f = Left(); var d3f = Left(); var d4f = Left(); var d5f = Left(); var d6f = Left(); var d7f = Left();
  d0f = subgroupMatrixLoad<Left>(&halves, qBase, false, SK);
  if (NF > 1u) { d1f = subgroupMatrixLoad<Left>(&halves, qBase + 16u, false, SK); }
  if (NF > 2u) { d2f = subgroupMatrixLoad<Left>(&halves, qBase + 32u, false, SK); }
  if (NF > 3u) { d3f = subgroupMatrixLoad<Left>(&halves, qBase + 48u, false, SK); }
  if (NF > 4u) { d4f = subgroupMatrixLoad<Left>(&halves, qBase + 64u, false, SK); }
  if (NF > 5u) { d5f = subgroupMatrixLoad<Left>(&halves, qBase + 80u, false, SK); }
  if (NF > 6u) { d6f = subgroupMatrixLoad<Left>(&halves, qBase + 96u, false, SK); }
  if (NF > 7u) { d7f = subgroupMatrixLoad<Left>(&halves, qBase + 112u, false, SK); }
  let qMin = qseg[0]; // segment ids do not decrease along a row (src/model/input-checks.ts)
  let rowSeg = qseg[row];
  // kStart: the first key visible to the tile's segment range, i.e. the number of keys before q0
  // whose segment precedes qMin, counted without a branch per key.
  var before = 0u;
  for (var c = lid; c < q0; c += THREADS) {
    before += select(0u, 1u, segIds[tok0 + c] < qMin);
  }
  if (before != 0u) {
    atomicAdd(&kStartCount[0], before);
  }
  let kStart = workgroupUniformLoad(&kStartCount[0]);

  var a0 = Frag(); var a1 = Frag(); var a2 = Frag(); var a3 = Frag(); var a4 = Frag(); var a5 = Frag(); var a6 = Frag(); var a7 = Frag();
  var pr: array<f32, 16>; // this lane's P values of the tile (columns hh + 2t)

  let kTiles = (qEnd + BC - 1u) / BC;
  for (var kt = kStart / BC; kt < kTiles; kt++) {
    let k0 = kt * BC;
    workgroupBarrier(); // the previous tile's dQ products (and the dO fragment loads) are done

    // A: K and V tiles, key segment ids.
    stageRows(&k, lid, tok0, k0, BC, Hkv, g, 0u, sK);
    stageRows(&v, lid, tok0, k0, BC, Hkv, g, V_OFFSET, sV);
    for (var c = lid; c < BC; c += THREADS) {
      var s = -1;
      if (k0 + c < T) {
        s = segIds[tok0 + k0 + c];
      }
      kseg[c] = s;
    }
    workgroupBarrier();

    // B: S = Q·Kᵀ; P in registers.
    for (var j = 0u; j < BC / 16u; j++) {
      var s = Frag();
      s = subgroupMatrixMultiplyAccumulate(q0f, tRight(0u, j, 0u), s);
      if (NF > 1u) { s = subgroupMatrixMultiplyAccumulate(q1f, tRight(0u, j, 1u), s); }
      if (NF > 2u) { s = subgroupMatrixMultiplyAccumulate(q2f, tRight(0u, j, 2u), s); }
      if (NF > 3u) { s = subgroupMatrixMultiplyAccumulate(q3f, tRight(0u, j, 3u), s); }
      if (NF > 4u) { s = subgroupMatrixMultiplyAccumulate(q4f, tRight(0u, j, 4u), s); }
      if (NF > 5u) { s = subgroupMatrixMultiplyAccumulate(q5f, tRight(0u, j, 5u), s); }
      if (NF > 6u) { s = subgroupMatrixMultiplyAccumulate(q6f, tRight(0u, j, 6u), s); }
      if (NF > 7u) { s = subgroupMatrixMultiplyAccumulate(q7f, tRight(0u, j, 7u), s); }
      subgroupMatrixStore(&scratch, sBase + j * 16u, s, false, SS);
    }
    workgroupBarrier();
    for (var t = 0u; t < BC / 2u; t++) {
      let c = hh + 2u * t;
      let key = k0 + c;
      let visible = live && key <= qi && kseg[c] == rowSeg;
      pr[t] = select(0.0, exp2(scratch[sBase + rr * SS + c] * cS - lse2), visible);
    }
    workgroupBarrier(); // the scores are read

    // C: dP = dO·Vᵀ; dS'' staged as f16.
    for (var j = 0u; j < BC / 16u; j++) {
      var s = Frag();
      s = subgroupMatrixMultiplyAccumulate(d0f, tRight(V_OFFSET, j, 0u), s);
      if (NF > 1u) { s = subgroupMatrixMultiplyAccumulate(d1f, tRight(V_OFFSET, j, 1u), s); }
      if (NF > 2u) { s = subgroupMatrixMultiplyAccumulate(d2f, tRight(V_OFFSET, j, 2u), s); }
      if (NF > 3u) { s = subgroupMatrixMultiplyAccumulate(d3f, tRight(V_OFFSET, j, 3u), s); }
      if (NF > 4u) { s = subgroupMatrixMultiplyAccumulate(d4f, tRight(V_OFFSET, j, 4u), s); }
      if (NF > 5u) { s = subgroupMatrixMultiplyAccumulate(d5f, tRight(V_OFFSET, j, 5u), s); }
      if (NF > 6u) { s = subgroupMatrixMultiplyAccumulate(d6f, tRight(V_OFFSET, j, 6u), s); }
      if (NF > 7u) { s = subgroupMatrixMultiplyAccumulate(d7f, tRight(V_OFFSET, j, 7u), s); }
      subgroupMatrixStore(&scratch, sBase + j * 16u, s, false, SS);
    }
    workgroupBarrier();
    for (var t = 0u; t < BC / 2u; t++) {
      let c = hh + 2u * t;
      let ds = params.dsScale * pr[t] * (scratch[sBase + rr * SS + c] - deltaS);
      halves[DS_OFFSET + row * SP + c] = f16(ds);
    }
    workgroupBarrier();

    // D: dQ += dS''·K.
    for (var kb = 0u; kb < BC / 16u; kb++) {
      let p = subgroupMatrixLoad<Left>(&halves, DS_OFFSET + sg * 16u * SP + kb * 16u, false, SP);
      a0 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 0u), a0);
      if (NF > 1u) { a1 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 1u), a1); }
      if (NF > 2u) { a2 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 2u), a2); }
      if (NF > 3u) { a3 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 3u), a3); }
      if (NF > 4u) { a4 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 4u), a4); }
      if (NF > 5u) { a5 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 5u), a5); }
      if (NF > 6u) { a6 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 6u), a6); }
      if (NF > 7u) { a7 = subgroupMatrixMultiplyAccumulate(p, kRight(kb, 7u), a7); }
    }
  }

  // Epilogue: dQ = acc · scale / (DS_SCALE · sdO · sV · sK), two fragments (32 columns) at a time.
  let f = params.scale * (1.0 / params.dsScale) * (1.0 / sK) * (1.0 / sV) * (1.0 / sdO);
  let outRow = ((tok0 + qi) * H + h) * DH4;
  workgroupBarrier();
  subgroupMatrixStore(&scratch, sBase, a0, false, SS);
  if (NF > 1u) { subgroupMatrixStore(&scratch, sBase + 16u, a1, false, SS); }
  workgroupBarrier();
  writeRound(sBase, rr, hh, outRow, 0u, f, live);
  if (NF > 2u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, a2, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, a3, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 1u, f, live);
  }
  if (NF > 4u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, a4, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, a5, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 2u, f, live);
  }
  if (NF > 6u) {
    workgroupBarrier();
    subgroupMatrixStore(&scratch, sBase, a6, false, SS);
    subgroupMatrixStore(&scratch, sBase + 16u, a7, false, SS);
    workgroupBarrier();
    writeRound(sBase, rr, hh, outRow, 3u, f, live);
  }
}
