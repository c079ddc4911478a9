// Matmul backward, input gradient:  dX (M, K) f32  =  [dX +] scale · dY (M, N) f32 · dequant(W) (N, K)
// the gradient of Y = X · Wᵀ with respect to X; with LORA (one slice, scale 1) the LoRA branch's
// term joins the same pass:
//   dX = [dX +] dY · dequant(W) + mask(dU (M, R) · A (R, K))
// for y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ, dU = s·dY·B computed before; mask is LoRA dropout's
// (lib/dropout_hash.wgsl, threshold 0: none): the R reduction steps run first, the mask multiplies
// the accumulators elementwise, then the N steps add dY·W on top. W is the PyTorch (N, K) weight, read in place from
// the forward's packed data in the format FORMAT picks (0 f32, 1 bf16x2, 2 nf4x8 with f32 block
// scales, 3 nf4x8 with double-quantised scales): no transposed or dequantised copy. The reduction
// runs over N (the forward's output width; V = 151936 for the tied lm_head).
//
// Split reduction: workgroup z sums n in [z·slice, min(N, (z+1)·slice)) and writes its own (M, K)
// block at dx[z·M·K ..]. With one slice (slice ≥ N) that is dX itself (scale applied, added to
// it when ACCUMULATE); with S slices the host binds a scratch (S, M, K) buffer with scale 1 to a
// pipeline without ACCUMULATE and adds the slices in order with matmul_backward_reduce.wgsl
// (deterministic).
//
// Bindings (group 0):
//   0 params   uniform    MatmulInputGradParams { m, n, k, slice, scale, offset, r, threshold, drop_scale, salt }
//                         offset: the double-quantisation mean (FORMAT 3); r, threshold,
//                         drop_scale (1 / (1 − p)), salt: the LoRA term (LORA only)
//   1 dx       read_write (S, M, K) f32 (S = 1: dX; read too when accumulating)
//   2 dy       read       (M, N) f32
//   3 w        read       (N, K) weight words: f32 bits | bf16x2 | nf4x8 (8 codes a word, element
//                         8i + 2j in the high nibble of byte j, blocks of 64 over the flattened weight)
//   4 absmax   read       FORMAT 2: (N·K / 64) f32 bits; FORMAT 3: (N·K / 64) u8x4 codes; else unused
//   5 absmax2  read       FORMAT 3: (ceil(N·K / 64 / 256)) f32; else unused
//   6 qmap     read       FORMAT 3: (256) f32 bitsandbytes' signed dynamic map; else unused
//   7 du       read       LORA: (M, R) f32 dU; else unused
//   8 lora_a   read       LORA: (R, K) f32 lora_A; else unused
//   9 seed     read       LORA with threshold > 0: (1) u32 dropout seed; else unused
// Dispatch: (ceil(M / BI), ceil(K / BJ), S) workgroups of (WG_J, WG_I) threads, BI = WG_I·TI and
// BJ = WG_J·TJ, WG_I·WG_J a multiple of 32 and at most 256. Saves nothing.
//
// Tiling, in GEMM letters: i rows of dX (tokens), j columns of dX (along K), l the reduction (along
// N). Each workgroup owns a BI × BJ tile of dX and walks l in steps of BL; both operand tiles sit
// l-major in workgroup memory as vec4 "slots", double buffered (one barrier per step), and the next
// step's global loads are issued before this step's arithmetic.
//   dY tile: rows of dY run along l, so each thread loads 4 consecutive rows × KA consecutive l
//   (BL / KA neighbouring threads read one run of BL floats of a row) and stores KA slots (4 rows at one l),
//   slot s at l stored at s ^ ((l / KA) mod 8) so the threads of a store phase hit different banks.
//   W tile: rows of W run along j, which is already the l-major layout the tile needs: a thread
//   loads one slot (4 consecutive columns of one W row; 32 threads read 128 columns of a row,
//   coalesced), decodes it after this step's arithmetic and stores it unswizzled.
// Thread (tx, ty) accumulates TI × TJ outputs: rows g·4·WG_I + 4·ty + a, columns h·4·WG_J + 4·tx + b,
// so each operand is one slot read from workgroup memory per 4 rows or columns.

override WG_I: u32 = 16u;
override WG_J: u32 = 16u;
override TI: u32 = 8u; // 4 or 8
override TJ: u32 = 8u; // 4 or 8
override BL: u32 = 8u; // 8 or 16
override FORMAT: u32 = 0u;
override ACCUMULATE: bool = false; // dX += … instead of dX = …
override LORA: bool = false;       // add mask(dU · A) (one slice only)
// threads along j within each group of 32 consecutive invocations (a warp on NVIDIA)
override WARP_J: u32 = 16u;

override BI: u32 = WG_I * TI;
override BJ: u32 = WG_J * TJ;
override THREADS: u32 = WG_I * WG_J;
override KA: u32 = BI * BL / (4u * THREADS); // l per thread per step in the dY tile: 1, 2 or 4
override SLOTS_W: u32 = BL * BJ / 4u;        // W tile slots per step
override PW: u32 = (SLOTS_W + THREADS - 1u) / THREADS; // W slots loaded per thread per step: 1..4
override SLOTS_A: u32 = 2u * BL * BI / 4u;
override SLOTS_B: u32 = 2u * SLOTS_W;

struct MatmulInputGradParams {
  m: u32,
  n: u32,
  k: u32,
  slice: u32,
  scale: f32,
  offset: f32,
  r: u32,
  threshold: u32,
  drop_scale: f32,
  salt: u32,
}

@group(0) @binding(0) var<uniform> params: MatmulInputGradParams;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> absmax: array<u32>;
@group(0) @binding(5) var<storage, read> absmax2: array<f32>;
@group(0) @binding(6) var<storage, read> qmap: array<f32>;
@group(0) @binding(7) var<storage, read> du: array<f32>;
@group(0) @binding(8) var<storage, read> lora_a: array<f32>;
@group(0) @binding(9) var<storage, read> seed: array<u32>;

// [buffer][l][slot], a slot = 4 consecutive rows of dY (swizzled) or 4 columns of W
var<workgroup> tileA: array<vec4<f32>, SLOTS_A>;
var<workgroup> tileB: array<vec4<f32>, SLOTS_B>;
var<workgroup> nf4lut: array<f32, 16>;

// #include "lib/nf4_codebook.wgsl"
// #include "lib/dropout_hash.wgsl"

// dY[i, l .. l+KA-1] in the first KA lanes (zeros past row M and past the slice end).
fn loadDy(i: u32, l: u32, lEnd: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (i < params.m) {
    let base = i * params.n + l;
    for (var q = 0u; q < KA; q++) {
      if (l + q < lEnd) {
        v[q] = dy[base + q];
      }
    }
  }
  return v;
}

// dU[i, l .. l+KA-1] (zeros past row M and past R).
fn loadDu(i: u32, l: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (i < params.m) {
    for (var q = 0u; q < KA; q++) {
      if (l + q < params.r) {
        v[q] = du[i * params.r + l + q];
      }
    }
  }
  return v;
}

// A[l, j .. j+3] as f32 bits (zeros past the edges).
fn loadA(l: u32, j: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (l < params.r) {
    for (var q = 0u; q < 4u; q++) {
      if (j + q < params.k) {
        v[q] = bitcast<u32>(lora_a[l * params.k + j + q]);
      }
    }
  }
  return v;
}

// #include "lib/nf4_block_scale.wgsl"

// One element W[e] (flattened index) decoded to f32: the general path for K % 4 != 0.
fn weightAt(e: u32) -> f32 {
  if (FORMAT == 0u) {
    return bitcast<f32>(w[e]);
  }
  if (FORMAT == 1u) {
    let word = w[e >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
  }
  // byte (e & 7) / 2 of the word, high nibble when e is even
  let code = (w[e >> 3u] >> (8u * ((e & 7u) >> 1u) + 4u * (1u - (e & 1u)))) & 15u;
  return nf4lut[code] * blockScale(e >> 6u);
}

// W[l, j .. j+3], still encoded when K % 4 == 0 (decodeW runs after this step's arithmetic):
//   f32: the 4 words; bf16: .x, .y the 2 words holding them;
//   nf4: .x the word holding them, .y the block scale's f32 bits (FORMAT 2) or its u8 code
//   (FORMAT 3, with .z the chunk scale's f32 bits), .w = 1 + the bit shift of their 16-bit half
//   (0 or 16): nonzero marks the slot as inside W.
// When K % 4 != 0 the elements are decoded here, as f32 bits. Zeros past the edges.
fn loadW(l: u32, j: u32, lEnd: u32) -> vec4<u32> {
  var v = vec4<u32>(0u);
  if (l >= lEnd || j >= params.k) {
    return v;
  }
  let e = l * params.k + j;
  if (params.k % 4u == 0u) {
    // e is a multiple of 4: the 4 elements share one NF4 word and block, or two bf16 words
    if (FORMAT == 0u) {
      v = vec4<u32>(w[e], w[e + 1u], w[e + 2u], w[e + 3u]);
    } else if (FORMAT == 1u) {
      v = vec4<u32>(w[e >> 1u], w[(e >> 1u) + 1u], 0u, 0u);
    } else {
      let b = e >> 6u;
      let shift = 1u + select(0u, 16u, (e & 4u) != 0u);
      if (FORMAT == 2u) {
        v = vec4<u32>(w[e >> 3u], absmax[b], 0u, shift);
      } else {
        v = vec4<u32>(w[e >> 3u], (absmax[b >> 2u] >> (8u * (b & 3u))) & 0xffu, bitcast<u32>(absmax2[b >> 8u]), shift);
      }
    }
    return v;
  }
  for (var q = 0u; q < 4u; q++) {
    if (j + q < params.k) {
      v[q] = bitcast<u32>(weightAt(e + q));
    }
  }
  return v;
}

// The 4 values loadW fetched, as f32 (`plain`: loadA's f32 bits).
fn decodeW(raw: vec4<u32>, plain: bool) -> vec4<f32> {
  if (plain || FORMAT == 0u || params.k % 4u != 0u) {
    return bitcast<vec4<f32>>(raw);
  }
  if (FORMAT == 1u) {
    return vec4<f32>(
      bitcast<f32>(raw.x << 16u),
      bitcast<f32>(raw.x & 0xffff0000u),
      bitcast<f32>(raw.y << 16u),
      bitcast<f32>(raw.y & 0xffff0000u),
    );
  }
  if (raw.w == 0u) {
    return vec4<f32>(0.0);
  }
  var a = bitcast<f32>(raw.y);
  if (FORMAT == 3u) {
    a = qmap[raw.y] * bitcast<f32>(raw.z) + params.offset;
  }
  // two bytes: elements e, e+1 in the high and low nibble of the first, e+2, e+3 of the second
  let half = raw.x >> (raw.w - 1u);
  return a * vec4<f32>(nf4lut[(half >> 4u) & 15u], nf4lut[half & 15u], nf4lut[(half >> 12u) & 15u], nf4lut[(half >> 8u) & 15u]);
}

// The global loads of step t: dU and A while t < loraSteps, else dY and W at l0 + (t − loraSteps)·BL.
fn load(
  t: u32,
  loraSteps: u32,
  l0: u32,
  lEnd: u32,
  i0: u32,
  j0: u32,
  rgA: u32,
  kgA: u32,
  li: u32,
  ra: ptr<function, array<vec4<f32>, 4>>,
  rw: ptr<function, array<vec4<u32>, 4>>,
) {
  let lora = t < loraSteps;
  let l = select(l0 + (t - loraSteps) * BL, t * BL, lora);
  for (var a = 0u; a < 4u; a++) {
    if (lora) {
      (*ra)[a] = loadDu(i0 + 4u * rgA + a, l + kgA * KA);
    } else {
      (*ra)[a] = loadDy(i0 + 4u * rgA + a, l + kgA * KA, lEnd);
    }
  }
  for (var q = 0u; q < PW; q++) {
    let s = li + q * THREADS;
    if (s < SLOTS_W) {
      if (lora) {
        (*rw)[q] = loadA(l + s / (BJ / 4u), j0 + 4u * (s % (BJ / 4u)));
      } else {
        (*rw)[q] = loadW(l + s / (BJ / 4u), j0 + 4u * (s % (BJ / 4u)), lEnd);
      }
    }
  }
}

// acc ← mask ⊙ acc: LoRA dropout's keep bit of each output element (row, col) of this thread,
// kept ones times drop_scale (the same element index row·K + col as the forward's dropped input).
fn dropoutMask(i0: u32, j0: u32, tx: u32, ty: u32, acc: ptr<function, array<vec4<f32>, 16>>) {
  let stream = dropoutStream(seed[0], params.salt);
  for (var g = 0u; g < TI / 4u; g++) {
    for (var a = 0u; a < 4u; a++) {
      let row = i0 + g * 4u * WG_I + 4u * ty + a;
      for (var h = 0u; h < TJ / 4u; h++) {
        let col = j0 + h * 4u * WG_J + 4u * tx;
        var v = (*acc)[(g * 4u + a) * 2u + h];
        for (var q = 0u; q < 4u; q++) {
          let keep = row < params.m && col + q < params.k && dropoutKeep(stream, row * params.k + col + q, params.threshold);
          v[q] = select(0.0, v[q] * params.drop_scale, keep);
        }
        (*acc)[(g * 4u + a) * 2u + h] = v;
      }
    }
  }
}

@compute @workgroup_size(WG_J, WG_I)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i0 = wg.x * BI;
  let j0 = wg.y * BJ;
  let l0 = wg.z * params.slice;
  let lEnd = min(params.n, l0 + params.slice);
  // (tx, ty): this thread's column and row group; each run of 32 invocations covers WARP_J × (32 / WARP_J)
  let lane = li % 32u;
  let warp = li / 32u;
  let tx = (warp % (WG_J / WARP_J)) * WARP_J + lane % WARP_J;
  let ty = (warp / (WG_J / WARP_J)) * (32u / WARP_J) + lane / WARP_J;
  if (FORMAT >= 2u && li < 16u) {
    let codebook = NF4_CODEBOOK;
    nf4lut[li] = bitcast<f32>(codebook[li]);
  }
  workgroupBarrier();

  // this thread's dY loads: rows 4·rgA .. 4·rgA+3 of the tile at l = kgA·KA .. kgA·KA+KA-1
  let rgA = li / (BL / KA);
  let kgA = li % (BL / KA);
  var steps = 0u;
  if (lEnd > l0) {
    steps = (lEnd - l0 + BL - 1u) / BL;
  }
  // with LORA the first loraSteps steps reduce over R (dU · A), the rest over N (dY · W)
  let loraSteps = select(0u, (params.r + BL - 1u) / BL, LORA);
  steps += loraSteps;

  var acc: array<vec4<f32>, 16>; // [row a of the thread][column group h]: TI × TJ / 4 used
  var ra: array<vec4<f32>, 4>;   // dY rows 4·rgA + a of the step being loaded
  var rw: array<vec4<u32>, 4>;   // W slots li + q·THREADS, still encoded

  // step 0's global loads; each step then stores what the previous one loaded
  load(0u, loraSteps, l0, lEnd, i0, j0, rgA, kgA, li, &ra, &rw);
  for (var t = 0u; t < steps; t++) {
    let buf = t & 1u;
    let plain = t < loraSteps;
    for (var q = 0u; q < KA; q++) {
      let l = kgA * KA + q;
      tileA[(buf * BL + l) * (BI / 4u) + (rgA ^ ((l / KA) & 7u))] = vec4<f32>(ra[0][q], ra[1][q], ra[2][q], ra[3][q]);
    }
    for (var q = 0u; q < PW; q++) {
      let s = li + q * THREADS;
      if (s < SLOTS_W) {
        tileB[buf * SLOTS_W + s] = decodeW(rw[q], plain);
      }
    }
    // one barrier a step: the other buffer, written next step, was last read before this barrier
    workgroupBarrier();

    if (t + 1u < steps) {
      load(t + 1u, loraSteps, l0, lEnd, i0, j0, rgA, kgA, li, &ra, &rw);
    }

    for (var kk = 0u; kk < BL; kk++) {
      let baseA = (buf * BL + kk) * (BI / 4u);
      let baseB = (buf * BL + kk) * (BJ / 4u);
      let swA = (kk / KA) & 7u;
      var b: array<vec4<f32>, 2>;
      for (var h = 0u; h < TJ / 4u; h++) {
        b[h] = tileB[baseB + h * WG_J + tx];
      }
      for (var g = 0u; g < TI / 4u; g++) {
        let av = tileA[baseA + ((g * WG_I + ty) ^ swA)];
        for (var a = 0u; a < 4u; a++) {
          for (var h = 0u; h < TJ / 4u; h++) {
            acc[(g * 4u + a) * 2u + h] += av[a] * b[h];
          }
        }
      }
    }
    if (LORA && t + 1u == loraSteps && params.threshold > 0u) {
      dropoutMask(i0, j0, tx, ty, &acc);
    }
  }

  let base = wg.z * params.m * params.k;
  for (var g = 0u; g < TI / 4u; g++) {
    for (var a = 0u; a < 4u; a++) {
      let row = i0 + g * 4u * WG_I + 4u * ty + a;
      if (row < params.m) {
        for (var h = 0u; h < TJ / 4u; h++) {
          let col = j0 + h * 4u * WG_J + 4u * tx;
          let v = params.scale * acc[(g * 4u + a) * 2u + h];
          for (var q = 0u; q < 4u; q++) {
            if (col + q < params.k) {
              let o = base + row * params.k + col + q;
              if (ACCUMULATE) {
                dx[o] = dx[o] + v[q];
              } else {
                dx[o] = v[q];
              }
            }
          }
        }
      }
    }
  }
}
