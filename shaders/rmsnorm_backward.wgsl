// RMSNorm backward (input gradient only: the norm weight is frozen), per row r of width W.
// Forward: y_j = w_j · x_j · s with s = rstd[r] = (mean_k x_k² + eps)^(−1/2).
// Derivation, for one row:
//   1. ∂s/∂x_k = −½ · (mean x² + eps)^(−3/2) · 2·x_k / W = −s³ · x_k / W
//   2. ∂y_j/∂x_k = w_j · (δ_jk · s + x_j · ∂s/∂x_k)
//   3. g_j = w_j · dy_j                                  (the weight folded into the incoming gradient)
//   4. c = (1/W) · Σ_j g_j · x_j                         (one reduction per row)
//   5. dx_k = Σ_j dy_j · ∂y_j/∂x_k = s · g_k − x_k · s³ · c = s · (g_k − x_k · s² · c)
// all in f32; s is the forward's saved statistic (not recomputed), weight the checkpoint's bf16.
// ACCUMULATE = true adds dx into the buffer (the residual stream's gradient, which already holds the
// gradient through the skip connection); false overwrites it (q/k norm: the gradient of the raw
// projection output has no other contribution).
//
// Bindings (group 0):
//   0 params  uniform    RmsnormParams { rows, width, eps }   (eps unused: s is saved)
//   1 dx      read_write (rows, W) f32      output: written, or added into with ACCUMULATE
//   2 dy      read       (rows, W) f32      gradient of the forward output y
//   3 x       read       (rows, W) f32      forward input
//   4 weight  read       (W) bf16x2         element 2i in the low half of word i, 2i+1 in the high half
//   5 rstd    read       (rows) f32         saved by the forward pass
//
// Dispatch: grid (gx, gy) with gx·gy ≥ ceil(rows / (WG / ROW_THREADS)); workgroup index
// g = wg.y · gx + wg.x handles rows g·(WG / ROW_THREADS) + s for s < WG / ROW_THREADS, the forward's
// geometry. ROW_THREADS consecutive invocations own a row: they stride over it (coalesced) four
// columns at a time for the dot product of step 4, add their partials with a tree in workgroup
// memory in a fixed order (deterministic), then re-read dy, x (from cache) to write step 5.
// ROW_THREADS = WG = 256 for wide rows (D = 2560); WG = 128, ROW_THREADS = 16 for narrow rows (Dh = 128).
// Saves nothing.

override WG: u32 = 256u;
// Invocations per row: a power of two dividing WG.
override ROW_THREADS: u32 = 256u;
override ACCUMULATE: bool = false;

struct RmsnormParams {
  rows: u32,
  width: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: RmsnormParams;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<u32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn weightAt(j: u32) -> f32 {
  let w = weight[j >> 1u];
  return select(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u), (j & 1u) == 1u);
}

// Step 5 for one element: writes or adds s · (w_j·dy_j − x_j · s²c).
fn store(i: u32, j: u32, s: f32, s2c: f32) {
  let v = s * (weightAt(j) * dy[i] - x[i] * s2c);
  if (ACCUMULATE) {
    dx[i] += v;
  } else {
    dx[i] = v;
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wg: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let rowsPerGroup = WG / ROW_THREADS;
  let lane = lid % ROW_THREADS;
  let seg = lid / ROW_THREADS;
  let row = (wg.y * nwg.x + wg.x) * rowsPerGroup + seg;
  // Rows past the end still join every barrier; they read and write nothing.
  let live = row < params.rows;
  let width = params.width;
  let base = row * width;

  let RT = ROW_THREADS;
  let full = (width / (4u * RT)) * (4u * RT);

  // Step 4: partial Σ g_j·x_j over this invocation's strided columns.
  var dot = 0.0;
  if (live) {
    for (var j = lane; j < full; j += 4u * RT) {
      let p = base + j;
      let a = weightAt(j) * dy[p] * x[p];
      let b = weightAt(j + RT) * dy[p + RT] * x[p + RT];
      let c = weightAt(j + 2u * RT) * dy[p + 2u * RT] * x[p + 2u * RT];
      let d = weightAt(j + 3u * RT) * dy[p + 3u * RT] * x[p + 3u * RT];
      dot += (a + b) + (c + d);
    }
    for (var j = full + lane; j < width; j += RT) {
      dot += weightAt(j) * dy[base + j] * x[base + j];
    }
  }
  partial[lid] = dot;
  workgroupBarrier();

  // Tree over the segment's ROW_THREADS slots, fixed order.
  for (var h = ROW_THREADS / 2u; h > 0u; h >>= 1u) {
    if (lane < h) {
      partial[lid] += partial[lid + h];
    }
    workgroupBarrier();
  }

  // Step 5.
  if (live) {
    let s = rstd[row];
    let s2c = s * s * (partial[seg * ROW_THREADS] / f32(width));
    for (var j = lane; j < full; j += 4u * RT) {
      let p = base + j;
      store(p, j, s, s2c);
      store(p + RT, j + RT, s, s2c);
      store(p + 2u * RT, j + 2u * RT, s, s2c);
      store(p + 3u * RT, j + 3u * RT, s, s2c);
    }
    for (var j = full + lane; j < width; j += RT) {
      store(base + j, j, s, s2c);
    }
  }
}
