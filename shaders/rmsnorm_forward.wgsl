// RMSNorm forward (transformers' Qwen3RMSNorm), per row r of width W:
//   rstd[r] = 1 / sqrt(mean_j x[r, j]² + eps)
//   y[r, j] = weight[j] · (x[r, j] · rstd[r])
// all in f32; weight holds the checkpoint's bf16 values unchanged. Serves the decoder norms
// (rows = N, W = D) and the per-head q/k norms (rows = N·H or N·Hkv, W = Dh, one weight for all heads).
//
// Bindings (group 0):
//   0 params  uniform    RmsnormParams { rows, width, eps }
//   1 y       read_write (rows, W) f32      output (a buffer separate from x)
//   2 rstd    read_write (rows) f32         saved for backward: 1 / sqrt(mean(x²) + eps)
//   3 x       read       (rows, W) f32      input
//   4 weight  read       (W) bf16x2         element 2i in the low half of word i, 2i+1 in the high half
//
// Dispatch: grid (gx, gy) with gx·gy ≥ ceil(rows / (WG / ROW_THREADS)); workgroup index
// g = wg.y · gx + wg.x handles rows g·(WG / ROW_THREADS) + s for s < WG / ROW_THREADS.
// Each row belongs to ROW_THREADS consecutive invocations ("a segment"): they stride over the row
// (coalesced) four loads at a time (columns j, j + RT, j + 2·RT, j + 3·RT in flight together), then add
// their partial sums of squares with a tree in workgroup memory in a fixed order (deterministic),
// then scale the row (re-read from cache).
// ROW_THREADS = WG = 256 for wide rows (D = 2560); WG = 128, ROW_THREADS = 16 for narrow rows
// (Dh = 128: 8 rows per workgroup, 8 columns per invocation).

override WG: u32 = 256u;
// Invocations per row: a power of two dividing WG.
override ROW_THREADS: u32 = 256u;

struct RmsnormParams {
  rows: u32,
  width: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> params: RmsnormParams;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<u32>;

var<workgroup> partial: array<f32, WG>;

fn weightAt(j: u32) -> f32 {
  let w = weight[j >> 1u];
  return select(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u), (j & 1u) == 1u);
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

  // 1. Partial sum of squares over this invocation's strided columns.
  var ss = 0.0;
  if (live) {
    for (var j = lane; j < full; j += 4u * RT) {
      let a = x[base + j];
      let b = x[base + j + RT];
      let c = x[base + j + 2u * RT];
      let d = x[base + j + 3u * RT];
      ss += (a * a + b * b) + (c * c + d * d);
    }
    for (var j = full + lane; j < width; j += RT) {
      let v = x[base + j];
      ss += v * v;
    }
  }
  partial[lid] = ss;
  workgroupBarrier();

  // 2. Tree over the segment's ROW_THREADS slots, fixed order.
  for (var s = ROW_THREADS / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      partial[lid] += partial[lid + s];
    }
    workgroupBarrier();
  }
  let r = 1.0 / sqrt(partial[seg * ROW_THREADS] / f32(width) + params.eps);

  // 3. Scale and save the statistic.
  if (live) {
    if (lane == 0u) {
      rstd[row] = r;
    }
    for (var j = lane; j < full; j += 4u * RT) {
      let a = x[base + j];
      let b = x[base + j + RT];
      let c = x[base + j + 2u * RT];
      let d = x[base + j + 3u * RT];
      y[base + j] = weightAt(j) * (a * r);
      y[base + j + RT] = weightAt(j + RT) * (b * r);
      y[base + j + 2u * RT] = weightAt(j + 2u * RT) * (c * r);
      y[base + j + 3u * RT] = weightAt(j + 3u * RT) * (d * r);
    }
    for (var j = full + lane; j < width; j += RT) {
      y[base + j] = weightAt(j) * (x[base + j] * r);
    }
  }
}
