// Flash attention forward on subgroup matrices (tensor cores): causal, grouped-query (GQA), with
// packed-segment masking — the same result as attention_forward.wgsl (read its header for the
// math), with QKᵀ and P·V as f16 16×16×16 fragment products accumulated in f32.
//
// For batch row b, query head h (KV head g = h / (H / Hkv)) and query token i:
//   s_j = scale · q_i · k_j over the keys j visible to i (j ≤ i, same segment id)
//   lse = log Σ_j exp(s_j),  o_i = Σ_j exp(s_j − lse) · v_j
//
// f16 without overflow or underflow (issue 11 item 4): the operands are staged as f16(q·sQ),
// f16(k·sK), f16(v·sV), where sQ, sK, sV are the power-of-two head scales of shaders/head_scale.wgsl
// (one per batch row and KV head group — for q the R = H / Hkv query heads of the group together,
// the granularity the backward's sums over a group need — bringing the largest |value| into
// [2^13, 2^14]) read from `scales` at the offsets in params. The score fragment holds sQ·sK·q·k; the f32 epilogue of each
// tile multiplies it by scale·log2(e) / (sQ·sK) (scores in base-2 units, so exp2 does the
// exponentials). Probabilities are staged as f16 too: P = exp2(s − m) with m a per-row reference
// that is raised only when the row's maximum passes it by more than LAZY (= 8), so P ≤ 2^8, far
// from f16's 65504; P values below f16's subnormals (2^-24) weigh less than 2^-24 of the row's
// largest and are lost as in any f16 product. The output fragment accumulates P·(v·sV); the
// epilogue divides by l·sV, l = Σ P in f32.
//
// Lazy rescaling: result fragments are opaque (a per-row factor cannot be applied in registers), so
// when some row's reference must rise (its max grew by more than LAZY after it had seen keys) the
// whole workgroup passes its output fragments through workgroup memory once, each row multiplied by
// exp2(m_old − m_new). With scores of trained models this happens in a few tiles of a row at most;
// a row's first visible tile only sets the reference (its output is still 0).
//
// Bindings (group 0):
//   0 params  uniform    AttentionSgmParams { tokens, qHeads, kvHeads, scale, qOff, kOff, vOff }
//   1 o       read_write (B·T, H·Dh) f32     output, token-major like q
//   2 lse     read_write (B·T, H) f32        log-sum-exp of the scaled scores (natural log)
//   3 q       read       (B·T, H·Dh) f32     queries after q_norm and rope
//   4 k       read       (B·T, Hkv·Dh) f32   keys after k_norm and rope
//   5 v       read       (B·T, Hkv·Dh) f32
//   6 segIds  read       (B·T) i32           example id of each token inside its batch row
//   7 scales  read       f32: head scales of batch row b and group g: q at qOff + b·Hkv + g, k at kOff + …, v at vOff + …
// Override constants: DH head dim (multiple of 16, ≤ 128); BC keys per tile (16 or 32).
// Workgroup: SG = 4 subgroups of 32 invocations; subgroup sg owns query rows 16·sg .. 16·sg + 15 of
// the BR = 64-row tile.
// Dispatch: (B·H, ceil(T / 64)) workgroups; workgroup (x, y) handles batch row x / H, head x % H
// and query tile ceil(T/64) − 1 − y (the longest tiles first). Saves lse for the backward.
//
// Before the key loop the workgroup finds the first key whose segment lies in the query tile's
// segment range (kStart, a workgroup-uniform value): the loop runs over the tiles from kStart's to
// the diagonal, and the per-key mask does the rest (segment ids grow along a row, so no tile in
// that range is dead; were they not to, the result would still be exact, only slower). The
// prologue issues all of its global loads (the tile's first segment id, Q's rows, the query ids and
// the keys counted for kStart, summed per subgroup) before it waits on any: against a prologue of
// five dependent steps, 1.03× at B4×T512 and at T2048, 1.3–2× with four examples a row (H200,
// 2026-12-04, bench/results/h200-2026-12-04-s4.md). Loading key tile 0 in the prologue as well
// (the first tile of every one-example row) made it 0.8× as fast: 64 more registers.
//
// The loop is pipelined: a tile's K rows are loaded (all of an invocation's rounds before any
// write: one load latency, not eight) and written at its top, its V rows are loaded into registers
// then and written after Q·Kᵀ, so their latency hides behind the fragment products. (Loading the
// next tile's K during this tile's P·V ran 7 % slower: 32 more registers through the tile.) K and V
// have their own tiles, and P and the scores are each subgroup's own rows, so a tile needs three
// barriers (and none between tiles):
//   A  write K as f16(k·sK) (BC × DH, rows padded by 8 halves) and the key segment ids; load V's
//      rows into registers; barrier;
//   B  each subgroup: S (16 × BC) = Q·Kᵀ from its Q fragments (loaded into registers once) and
//      right fragments of the K tile, into its rows of the f32 score scratch; write V as
//      f16(v·sV); barrier;
//   C  each subgroup's lanes run the online softmax of its rows — lane l owns row l / 2 and the
//      columns of parity l % 2 (in registers), the row's maximum and sum combined with a subgroup
//      shuffle — writing P as f16 and raising the rescale flag where needed (rows whose keys are
//      all visible skip the mask); the flag's uniform load (its barrier makes P visible);
//   D  (rare) rescale of the output fragments through the score scratch;
//   E  O += P·V: left fragments of P, right fragments of the V tile.
// Why no barrier is needed between tiles: the next tile's K is written after this tile's barrier B
// (every Q·Kᵀ read of K is before it), its V after its own barrier A (every P·V read of this V is
// before it), its key ids after this tile's flag load (every softmax read is before it).
// Result fragments are named variables used under `if (NF > j)` (override constants): an array of
// them indexed in loops ran about 2× slower in the matmul kernel (shaders/matmul_sgm_forward.wgsl);
// the staged rows are named fields of a struct (Rows, lib/attention_rows.wgsl) for the same reason.

enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);

override DH: u32 = 128u;
override BC: u32 = 32u;

const SG = 4u;            // subgroups per workgroup
const BR = 64u;           // query rows per workgroup (16 per subgroup)
const THREADS = 128u;
const PAD = 8u;           // halves of padding per staged f16 row
const MAX_DH = 128u;
const MAX_BC = 32u;
const SK = MAX_DH + PAD;  // row stride of the staged Q/K/V tiles, in halves (fixed: fragment loads need fixed-size arrays)
const SP = MAX_BC + PAD;  // row stride of the staged P tile, in halves
const V_OFFSET = MAX_BC * SK; // the V tile follows the K tile; the two take the Q tile's place (BR = 2·MAX_BC rows)
const P_OFFSET = BR * SK; // the P tile follows the Q (or K and V) tiles in `halves`
const SS = 68u;           // row stride of the score scratch, in floats (≥ 64: the epilogue stores 4 fragments a row)
const MASKED: f32 = -1.0e30;
const VISIBLE_MIN: f32 = -1.0e29;
const LAZY: f32 = 8.0;    // base-2 units the reference may trail the row maximum (P ≤ 2^LAZY)
const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;

override NF: u32 = DH / 16u;      // output fragments per subgroup (16 columns each)
override DH4: u32 = DH / 4u;

struct AttentionSgmParams {
  tokens: u32,
  qHeads: u32,
  kvHeads: u32,
  scale: f32,
  qOff: u32,
  kOff: u32,
  vOff: u32,
}

@group(0) @binding(0) var<uniform> params: AttentionSgmParams;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> k: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> v: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> segIds: array<i32>;
@group(0) @binding(7) var<storage, read> scales: array<f32>;

var<workgroup> halves: array<f16, BR * SK + BR * SP>; // Q tile [BR][SK] (before the loop), then K [MAX_BC][SK] and V [MAX_BC][SK]; P [BR][SP]
var<workgroup> scores: array<f32, BR * SS>;           // S rows of each subgroup; the rescale and epilogue scratch
var<workgroup> qseg: array<i32, BR>;
var<workgroup> kStartPart: array<u32, SG>; // each subgroup's share of the kStart count
var<workgroup> kseg: array<i32, MAX_BC>;
// Flag words: [0..2] the rescale flag of tile kt in word kt % 3 (rotating, so that one uniform load
// a tile suffices: word (kt + 1) % 3 is cleared during tile kt, two uniform loads after its last
// read); [3] kStart, the first key visible to the tile's segment range (a count). 16 bytes (see
// tests/kernels/workgroup-alignment.test.ts on the alignment of workgroup variables).
var<workgroup> flags: array<atomic<u32>, 4>;

alias Frag = subgroup_matrix_result<f32, 16, 16>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;

// #include "lib/attention_rows.wgsl"

// Right fragment of Kᵀ: keys 16·j .. of the tile, head dims 16·kk .. (the K tile is [key][dim]: column-major Kᵀ).
fn kRight(j: u32, kk: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, j * 16u * SK + kk * 16u, true, SK);
}

// Right fragment of V: keys 16·kb .., head dims 16·j .. (the V tile is [key][dim]: row-major).
fn vRight(kb: u32, j: u32) -> Right {
  return subgroupMatrixLoad<Right>(&halves, V_OFFSET + kb * 16u * SK + j * 16u, false, SK);
}

// Multiplies row `row` (0..15) of the 16 × 16 fragment stored at scores[base] by f, columns of parity `hh`.
fn scaleStoredRow(base: u32, row: u32, hh: u32, f: f32) {
  for (var c = hh; c < 16u; c += 2u) {
    scores[base + row * SS + c] *= f;
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
  let rr = lane / 2u;            // this lane's row within its subgroup's 16 (softmax, rescale, epilogue)
  let hh = lane % 2u;            // ... and its column parity
  let row = sg * 16u + rr;       // row within the tile
  let sBase = sg * 16u * SS;     // this subgroup's rows of the score scratch
  let sQ = scales[params.qOff + b * Hkv + g];
  let sK = scales[params.kOff + b * Hkv + g];
  let sV = scales[params.vOff + b * Hkv + g];
  let cS = params.scale * LOG2E * (1.0 / sQ) * (1.0 / sK);

  // Prologue: every global load of the set-up is issued before any is waited on — the tile's
  // first segment id (qMin), all of Q's rounds, this invocation's query segment id and its share
  // of the kStart count — so the workgroup waits about one load latency, not one per step.
  let qMin = segIds[tok0 + q0]; // segment ids do not decrease along a row (src/model/input-checks.ts)
  let qRounds = rowsRounds(BR); // ≤ 16: DH ≤ 128
  let qa = rowsLoad(&q, lid, 0u, tok0, q0, BR, H, h);
  var qb = rowsZero();
  if (qRounds > 8u) {
    qb = rowsLoad(&q, lid, 8u, tok0, q0, BR, H, h);
  }
  var mySeg = 0;
  if (lid < BR && q0 + lid < T) {
    mySeg = segIds[tok0 + q0 + lid];
  }
  // kStart: the first key visible to the tile's segment range, i.e. the number of keys before q0
  // whose segment precedes qMin (segment ids do not decrease), four loads a round.
  var before = 0u;
  for (var c = lid; c < q0; c += 4u * THREADS) {
    let c1 = c + THREADS;
    let c2 = c1 + THREADS;
    let c3 = c2 + THREADS;
    let s0 = segIds[tok0 + c];
    let s1 = segIds[tok0 + min(c1, q0 - 1u)];
    let s2 = segIds[tok0 + min(c2, q0 - 1u)];
    let s3 = segIds[tok0 + min(c3, q0 - 1u)];
    before += select(0u, 1u, s0 < qMin) + select(0u, 1u, c1 < q0 && s1 < qMin) + select(0u, 1u, c2 < q0 && s2 < qMin) + select(0u, 1u, c3 < q0 && s3 < qMin);
  }
  rowsStore(lid, 0u, BR, 0u, qa, sQ);
  if (qRounds > 8u) {
    rowsStore(lid, 8u, BR, 0u, qb, sQ);
  }
  if (lid < BR) {
    qseg[lid] = mySeg;
  }
  let subgroupBefore = subgroupAdd(before); // subgroups of 32 (src/kernels/attention-sgm.ts checks)
  if (lane == 0u) {
    kStartPart[sg] = subgroupBefore;
  }
  if (lid == 0u) {
    atomicStore(&flags[0], 0u);
    atomicStore(&flags[1], 0u);
    atomicStore(&flags[2], 0u);
  }
  workgroupBarrier();
  let rowSeg = qseg[row];
  let qi = q0 + row;              // this lane's query token
  // Q fragments of the subgroup's rows, for the whole key loop.
  let qBase = sg * 16u * SK;
  var f0 = Left(); var f1 = Left(); var f2 = Left(); var f3 = Left(); var f4 = Left(); var f5 = Left(); var f6 = Left(); var f7 = Left();
  f0 = subgroupMatrixLoad<Left>(&halves, qBase, false, SK);
  if (NF > 1u) { f1 = subgroupMatrixLoad<Left>(&halves, qBase + 16u, false, SK); }
  if (NF > 2u) { f2 = subgroupMatrixLoad<Left>(&halves, qBase + 32u, false, SK); }
  if (NF > 3u) { f3 = subgroupMatrixLoad<Left>(&halves, qBase + 48u, false, SK); }
  if (NF > 4u) { f4 = subgroupMatrixLoad<Left>(&halves, qBase + 64u, false, SK); }
  if (NF > 5u) { f5 = subgroupMatrixLoad<Left>(&halves, qBase + 80u, false, SK); }
  if (NF > 6u) { f6 = subgroupMatrixLoad<Left>(&halves, qBase + 96u, false, SK); }
  if (NF > 7u) { f7 = subgroupMatrixLoad<Left>(&halves, qBase + 112u, false, SK); }
  if (lid == 0u) {
    atomicStore(&flags[3], kStartPart[0] + kStartPart[1] + kStartPart[2] + kStartPart[3]);
  }
  let kStart = workgroupUniformLoad(&flags[3]); // its barrier also ends the Q fragment loads: K may overwrite the Q tile

  var o0 = Frag(); var o1 = Frag(); var o2 = Frag(); var o3 = Frag(); var o4 = Frag(); var o5 = Frag(); var o6 = Frag(); var o7 = Frag();
  var mRef = MASKED; // this lane's row: reference maximum (base-2 units)
  var lPart = 0.0;   // this lane's share of the row's Σ P (its columns)

  let kTiles = (qEnd + BC - 1u) / BC;
  for (var kt = kStart / BC; kt < kTiles; kt++) {
    let k0 = kt * BC;

    // A: K tile and key segment ids; V rows into registers.
    stageRows(&k, lid, tok0, k0, BC, Hkv, g, 0u, sK); // BC·DH4 ≤ 8·THREADS: one load latency
    for (var c = lid; c < BC; c += THREADS) {
      var s = -1;
      if (k0 + c < T) {
        s = segIds[tok0 + k0 + c];
      }
      kseg[c] = s;
    }
    let vr = rowsLoad(&v, lid, 0u, tok0, k0, BC, Hkv, g);
    workgroupBarrier(); // K tile and key ids visible

    // B: S = Q·Kᵀ, 16 keys at a time, into the subgroup's rows of the scratch; then the V tile.
    for (var j = 0u; j < BC / 16u; j++) {
      var s = Frag();
      s = subgroupMatrixMultiplyAccumulate(f0, kRight(j, 0u), s);
      if (NF > 1u) { s = subgroupMatrixMultiplyAccumulate(f1, kRight(j, 1u), s); }
      if (NF > 2u) { s = subgroupMatrixMultiplyAccumulate(f2, kRight(j, 2u), s); }
      if (NF > 3u) { s = subgroupMatrixMultiplyAccumulate(f3, kRight(j, 3u), s); }
      if (NF > 4u) { s = subgroupMatrixMultiplyAccumulate(f4, kRight(j, 4u), s); }
      if (NF > 5u) { s = subgroupMatrixMultiplyAccumulate(f5, kRight(j, 5u), s); }
      if (NF > 6u) { s = subgroupMatrixMultiplyAccumulate(f6, kRight(j, 6u), s); }
      if (NF > 7u) { s = subgroupMatrixMultiplyAccumulate(f7, kRight(j, 7u), s); }
      subgroupMatrixStore(&scores, sBase + j * 16u, s, false, SS);
    }
    rowsStore(lid, 0u, BC, V_OFFSET, vr, sV);
    workgroupBarrier(); // scores and V visible; every subgroup is done with the K tile

    // C: the online softmax of this lane's row and columns (scores kept in registers between the passes).
    var sv: array<f32, MAX_BC / 2u>;
    var mt = MASKED;
    // Every key of the tile visible to this row: at or before it, and (segment ids not decreasing)
    // the tile's first key in the row's segment; the common case takes no per-key mask.
    let full = k0 + BC - 1u <= qi && kseg[0] == rowSeg;
    if (full) {
      for (var i = 0u; i < BC / 2u; i++) {
        let s = scores[sBase + rr * SS + 2u * i + hh] * cS;
        sv[i] = s;
        mt = max(mt, s);
      }
    } else {
      for (var i = 0u; i < BC / 2u; i++) {
        let c = 2u * i + hh;
        let visible = k0 + c <= qi && kseg[c] == rowSeg && qi < T;
        let s = select(MASKED, scores[sBase + rr * SS + c] * cS, visible);
        sv[i] = s;
        mt = max(mt, s);
      }
    }
    mt = max(mt, subgroupShuffleXor(mt, 1u));
    let lOther = subgroupShuffleXor(lPart, 1u);
    var alpha = 1.0;
    if (mt > mRef + LAZY) {
      alpha = exp2(mRef - mt); // 0 when the row had seen no key (its output and sum are still 0)
      mRef = mt;
      if (lPart != 0.0 || lOther != 0.0) {
        atomicOr(&flags[kt % 3u], 1u);
      }
    }
    lPart *= alpha;
    let pBase = P_OFFSET + row * SP;
    for (var i = 0u; i < BC / 2u; i++) {
      let p = select(0.0, exp2(sv[i] - mRef), sv[i] > VISIBLE_MIN);
      lPart += p;
      halves[pBase + 2u * i + hh] = f16(p);
    }
    if (lid == 0u) {
      atomicStore(&flags[(kt + 1u) % 3u], 0u);
    }
    let rescale = workgroupUniformLoad(&flags[kt % 3u]); // its barrier: P visible, the scores read

    // D: rescale the output fragments (rows by alpha), four at a time through the scratch.
    if (rescale != 0u) {
      subgroupMatrixStore(&scores, sBase, o0, false, SS);
      if (NF > 1u) { subgroupMatrixStore(&scores, sBase + 16u, o1, false, SS); }
      if (NF > 2u) { subgroupMatrixStore(&scores, sBase + 32u, o2, false, SS); }
      if (NF > 3u) { subgroupMatrixStore(&scores, sBase + 48u, o3, false, SS); }
      workgroupBarrier();
      for (var j = 0u; j < min(NF, 4u); j++) {
        scaleStoredRow(sBase + 16u * j, rr, hh, alpha);
      }
      workgroupBarrier();
      o0 = subgroupMatrixLoad<Frag>(&scores, sBase, false, SS);
      if (NF > 1u) { o1 = subgroupMatrixLoad<Frag>(&scores, sBase + 16u, false, SS); }
      if (NF > 2u) { o2 = subgroupMatrixLoad<Frag>(&scores, sBase + 32u, false, SS); }
      if (NF > 3u) { o3 = subgroupMatrixLoad<Frag>(&scores, sBase + 48u, false, SS); }
      if (NF > 4u) {
        workgroupBarrier();
        subgroupMatrixStore(&scores, sBase, o4, false, SS);
        if (NF > 5u) { subgroupMatrixStore(&scores, sBase + 16u, o5, false, SS); }
        if (NF > 6u) { subgroupMatrixStore(&scores, sBase + 32u, o6, false, SS); }
        if (NF > 7u) { subgroupMatrixStore(&scores, sBase + 48u, o7, false, SS); }
        workgroupBarrier();
        for (var j = 0u; j < NF - 4u; j++) {
          scaleStoredRow(sBase + 16u * j, rr, hh, alpha);
        }
        workgroupBarrier();
        o4 = subgroupMatrixLoad<Frag>(&scores, sBase, false, SS);
        if (NF > 5u) { o5 = subgroupMatrixLoad<Frag>(&scores, sBase + 16u, false, SS); }
        if (NF > 6u) { o6 = subgroupMatrixLoad<Frag>(&scores, sBase + 32u, false, SS); }
        if (NF > 7u) { o7 = subgroupMatrixLoad<Frag>(&scores, sBase + 48u, false, SS); }
      }
    }

    // E: O += P·V, 16 keys at a time.
    for (var kb = 0u; kb < BC / 16u; kb++) {
      let p = subgroupMatrixLoad<Left>(&halves, P_OFFSET + sg * 16u * SP + kb * 16u, false, SP);
      o0 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 0u), o0);
      if (NF > 1u) { o1 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 1u), o1); }
      if (NF > 2u) { o2 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 2u), o2); }
      if (NF > 3u) { o3 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 3u), o3); }
      if (NF > 4u) { o4 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 4u), o4); }
      if (NF > 5u) { o5 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 5u), o5); }
      if (NF > 6u) { o6 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 6u), o6); }
      if (NF > 7u) { o7 = subgroupMatrixMultiplyAccumulate(p, vRight(kb, 7u), o7); }
    }
  }

  // Epilogue: o = O / (l·sV), lse = (m + log2 l)·ln 2; four fragments at a time through the scratch.
  let l = lPart + subgroupShuffleXor(lPart, 1u);
  let inv = select(0.0, 1.0 / (l * sV), l > 0.0);
  let live = qi < T;
  let outRow = ((tok0 + qi) * H + h) * DH4;
  workgroupBarrier(); // every subgroup is done with the scratch
  subgroupMatrixStore(&scores, sBase, o0, false, SS);
  if (NF > 1u) { subgroupMatrixStore(&scores, sBase + 16u, o1, false, SS); }
  if (NF > 2u) { subgroupMatrixStore(&scores, sBase + 32u, o2, false, SS); }
  if (NF > 3u) { subgroupMatrixStore(&scores, sBase + 48u, o3, false, SS); }
  workgroupBarrier();
  let cols0 = min(NF, 4u) * 4u; // vec4 columns in the first half
  for (var c4 = hh; c4 < cols0; c4 += 2u) {
    if (live) {
      let at = sBase + rr * SS + c4 * 4u;
      o[outRow + c4] = vec4<f32>(scores[at], scores[at + 1u], scores[at + 2u], scores[at + 3u]) * inv;
    }
  }
  if (NF > 4u) {
    workgroupBarrier();
    subgroupMatrixStore(&scores, sBase, o4, false, SS);
    if (NF > 5u) { subgroupMatrixStore(&scores, sBase + 16u, o5, false, SS); }
    if (NF > 6u) { subgroupMatrixStore(&scores, sBase + 32u, o6, false, SS); }
    if (NF > 7u) { subgroupMatrixStore(&scores, sBase + 48u, o7, false, SS); }
    workgroupBarrier();
    for (var c4 = hh; c4 < (NF - 4u) * 4u; c4 += 2u) {
      if (live) {
        let at = sBase + rr * SS + c4 * 4u;
        o[outRow + 16u + c4] = vec4<f32>(scores[at], scores[at + 1u], scores[at + 2u], scores[at + 3u]) * inv;
      }
    }
  }
  if (live && hh == 0u) {
    lse[(tok0 + qi) * H + h] = select(0.0, (mRef + log2(l)) * LN2, l > 0.0);
  }
}
