// Deterministic sum: out[0] = (accumulate ≠ 0 ? out[0] : 0) + Σ_i values[i], i < n.
// Used to total per-row losses, and with accumulate = 1 to add each chunk's losses into one sum on
// the GPU without a CPU round trip.
//
// Bindings (group 0):
//   0 params  uniform    SumParams { n, accumulate }
//   1 out     read_write (1) f32      the sum (read first when accumulate ≠ 0)
//   2 values  read       (n) f32
//
// Dispatch: exactly one workgroup of WG invocations. Invocation t keeps four running sums over
// values[c + k·WG + t] for chunks c of 4·WG (k = 0..3, four coalesced loads in flight), then the
// tail; the WG partials are added by a tree in workgroup memory. The order depends only on n, so
// two runs give identical bits.
// Saves nothing.

override WG: u32 = 256u;

struct SumParams {
  n: u32,
  accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: SumParams;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = params.n;
  let step = 4u * WG;
  let full = (n / step) * step;
  var a0 = 0.0;
  var a1 = 0.0;
  var a2 = 0.0;
  var a3 = 0.0;
  for (var j = lid; j < full; j += step) {
    a0 += values[j];
    a1 += values[j + WG];
    a2 += values[j + 2u * WG];
    a3 += values[j + 3u * WG];
  }
  for (var j = full + lid; j < n; j += WG) {
    a0 += values[j];
  }
  partial[lid] = (a0 + a1) + (a2 + a3);
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      partial[lid] += partial[lid + h];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let prior = select(0.0, out[0], params.accumulate != 0u);
    out[0] = prior + partial[0];
  }
}
