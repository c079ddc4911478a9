// Matmul backward, weight gradient:  dW (N, K) f32  =  [dW +] scale · dYᵀ (N, M) · X (M, K)
// i.e. dW[n, k] = scale · Σ_m dY[m, n] · X[m, k], the gradient of Y = X · Wᵀ with respect to W (a
// LoRA matrix: dB from dY and U = X·Aᵀ, dA from dU and X). The reduction runs over the M tokens.
//
// Split reduction: workgroup z sums m in [z·slice, min(M, (z+1)·slice)) and writes its own (N, K)
// block at dw[z·N·K ..]. With one slice (slice ≥ M) that is dW itself (scale applied, added to
// it when ACCUMULATE); with S slices the host binds a scratch (S, N, K) buffer with scale 1 to a
// pipeline without ACCUMULATE and adds the slices in order with matmul_backward_reduce.wgsl
// (deterministic).
//
// Bindings (group 0):
//   0 params  uniform    MatmulWeightGradParams { m, n, k, slice, scale }
//   1 dw      read_write (S, N, K) f32 (S = 1: dW; read too when accumulating)
//   2 dy      read       (M, N) f32
//   3 x       read       (M, K) f32
// Dispatch: (ceil(N / BI), ceil(K / BJ), S) workgroups of (WG_J, WG_I) threads, BI = WG_I·TI and
// BJ = WG_J·TJ, WG_I·WG_J a multiple of 32 and at most 256. Saves nothing.
//
// Tiling, in GEMM letters: i rows of dW (along N), j columns (along K), l the reduction (tokens).
// Each workgroup owns a BI × BJ tile and walks l in steps of BL. Both operands are stored with the
// reduction index as their row (dY (M, N), X (M, K)), which is the l-major layout the workgroup
// tiles need: a thread loads one vec4 slot (4 consecutive columns of one row; 32 threads read 128
// consecutive floats, coalesced) and stores it as it is. Tiles are double buffered (one barrier per
// step) and the next step's global loads are issued before this step's arithmetic. Thread (tx, ty)
// accumulates TI × TJ outputs: rows g·4·WG_I + 4·ty + a, columns h·4·WG_J + 4·tx + b.

override WG_I: u32 = 16u;
override WG_J: u32 = 16u;
override TI: u32 = 8u; // 4 or 8
override TJ: u32 = 8u; // 4 or 8
override BL: u32 = 8u; // 8 or 16
override ACCUMULATE: bool = false; // dW += … instead of dW = …
// threads along j within each group of 32 consecutive invocations (a warp on NVIDIA)
override WARP_J: u32 = 16u;

override BI: u32 = WG_I * TI;
override BJ: u32 = WG_J * TJ;
override THREADS: u32 = WG_I * WG_J;
override STEP_A: u32 = BL * BI / 4u; // dY tile slots per step
override STEP_B: u32 = BL * BJ / 4u; // X tile slots per step
override PA: u32 = (STEP_A + THREADS - 1u) / THREADS; // slots loaded per thread per step: 1..4
override PB: u32 = (STEP_B + THREADS - 1u) / THREADS;
override SLOTS_A: u32 = 2u * STEP_A;
override SLOTS_B: u32 = 2u * STEP_B;

struct MatmulWeightGradParams {
  m: u32,
  n: u32,
  k: u32,
  slice: u32,
  scale: f32,
}

@group(0) @binding(0) var<uniform> params: MatmulWeightGradParams;
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;

// [buffer][l][slot], a slot = 4 consecutive columns of dY (tile A) or X (tile B) at one token
var<workgroup> tileA: array<vec4<f32>, SLOTS_A>;
var<workgroup> tileB: array<vec4<f32>, SLOTS_B>;

// dY[l, i .. i+3] (zeros past the slice end and past column N).
fn loadDy(l: u32, i: u32, lEnd: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (l < lEnd) {
    let base = l * params.n + i;
    for (var q = 0u; q < 4u; q++) {
      if (i + q < params.n) {
        v[q] = dy[base + q];
      }
    }
  }
  return v;
}

// X[l, j .. j+3] (zeros past the slice end and past column K).
fn loadX(l: u32, j: u32, lEnd: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  if (l < lEnd) {
    let base = l * params.k + j;
    for (var q = 0u; q < 4u; q++) {
      if (j + q < params.k) {
        v[q] = x[base + q];
      }
    }
  }
  return v;
}

@compute @workgroup_size(WG_J, WG_I)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i0 = wg.x * BI;
  let j0 = wg.y * BJ;
  let l0 = wg.z * params.slice;
  let lEnd = min(params.m, l0 + params.slice);
  // (tx, ty): this thread's column and row group; each run of 32 invocations covers WARP_J × (32 / WARP_J)
  let lane = li % 32u;
  let warp = li / 32u;
  let tx = (warp % (WG_J / WARP_J)) * WARP_J + lane % WARP_J;
  let ty = (warp / (WG_J / WARP_J)) * (32u / WARP_J) + lane / WARP_J;
  var steps = 0u;
  if (lEnd > l0) {
    steps = (lEnd - l0 + BL - 1u) / BL;
  }

  var acc: array<vec4<f32>, 16>; // [row a of the thread][column group h]: TI × TJ / 4 used
  var ra: array<vec4<f32>, 4>;   // dY slots li + q·THREADS of the step being loaded
  var rb: array<vec4<f32>, 4>;   // X slots li + q·THREADS

  // step 0's global loads; each step then stores what the previous one loaded
  for (var q = 0u; q < PA; q++) {
    let s = li + q * THREADS;
    if (s < STEP_A) {
      ra[q] = loadDy(l0 + s / (BI / 4u), i0 + 4u * (s % (BI / 4u)), lEnd);
    }
  }
  for (var q = 0u; q < PB; q++) {
    let s = li + q * THREADS;
    if (s < STEP_B) {
      rb[q] = loadX(l0 + s / (BJ / 4u), j0 + 4u * (s % (BJ / 4u)), lEnd);
    }
  }
  for (var t = 0u; t < steps; t++) {
    let buf = t & 1u;
    for (var q = 0u; q < PA; q++) {
      let s = li + q * THREADS;
      if (s < STEP_A) {
        tileA[buf * STEP_A + s] = ra[q];
      }
    }
    for (var q = 0u; q < PB; q++) {
      let s = li + q * THREADS;
      if (s < STEP_B) {
        tileB[buf * STEP_B + s] = rb[q];
      }
    }
    // one barrier a step: the other buffer, written next step, was last read before this barrier
    workgroupBarrier();

    let next = t + 1u;
    if (next < steps) {
      let ln = l0 + next * BL;
      for (var q = 0u; q < PA; q++) {
        let s = li + q * THREADS;
        if (s < STEP_A) {
          ra[q] = loadDy(ln + s / (BI / 4u), i0 + 4u * (s % (BI / 4u)), lEnd);
        }
      }
      for (var q = 0u; q < PB; q++) {
        let s = li + q * THREADS;
        if (s < STEP_B) {
          rb[q] = loadX(ln + s / (BJ / 4u), j0 + 4u * (s % (BJ / 4u)), lEnd);
        }
      }
    }

    for (var kk = 0u; kk < BL; kk++) {
      let baseA = (buf * BL + kk) * (BI / 4u);
      let baseB = (buf * BL + kk) * (BJ / 4u);
      var b: array<vec4<f32>, 2>;
      for (var h = 0u; h < TJ / 4u; h++) {
        b[h] = tileB[baseB + h * WG_J + tx];
      }
      for (var g = 0u; g < TI / 4u; g++) {
        let av = tileA[baseA + g * WG_I + ty];
        for (var a = 0u; a < 4u; a++) {
          for (var h = 0u; h < TJ / 4u; h++) {
            acc[(g * 4u + a) * 2u + h] += av[a] * b[h];
          }
        }
      }
    }
  }

  let base = wg.z * params.n * params.k;
  for (var g = 0u; g < TI / 4u; g++) {
    for (var a = 0u; a < 4u; a++) {
      let row = i0 + g * 4u * WG_I + 4u * ty + a;
      if (row < params.n) {
        for (var h = 0u; h < TJ / 4u; h++) {
          let col = j0 + h * 4u * WG_J + 4u * tx;
          let v = params.scale * acc[(g * 4u + a) * 2u + h];
          for (var q = 0u; q < 4u; q++) {
            if (col + q < params.k) {
              let o = base + row * params.k + col + q;
              if (ACCUMULATE) {
                dw[o] = dw[o] + v[q];
              } else {
                dw[o] = v[q];
              }
            }
          }
        }
      }
    }
  }
}
