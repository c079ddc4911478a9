// SwiGLU backward, elementwise over (N, F). Forward: act = silu(g) · u, silu(g) = g · σ(g),
// σ(g) = 1 / (1 + e^−g). Derivation, per element:
//   1. dσ/dg = σ · (1 − σ)
//   2. dsilu/dg = σ + g · σ · (1 − σ) = σ · (1 + g · (1 − σ))
//   3. dgate = dact · u · σ · (1 + g · (1 − σ))
//   4. dup   = dact · silu(g) = dact · g · σ
// Both outputs are overwritten (the gate and up projections' outputs have no other consumer).
// σ is computed as 1 / (1 + e^min(−g, 80)): for g < −80 σ stays a tiny positive number instead of
// relying on e^−g overflowing to infinity (WGSL may assume no infinities); the error is < 1e-34.
//
// IN_PLACE = false: g, u are read from `gate`, `up`; dgate, dup are written to `dgate`, `dup`.
// IN_PLACE = true: g, u are read from `dgate`, `dup` themselves (the buffers that hold the gate and
// up projections' outputs) and overwritten with the gradients, element by element (each invocation
// reads its element before writing it); `gate` and `up` are then not read, and the caller binds a
// placeholder there (WebGPU forbids one buffer bound both read-only and writable in a dispatch).
//
// Bindings (group 0):
//   0 params  uniform    SwigluParams { count }   number of elements (N·F)
//   1 dgate   read_write (N, F) f32    output (IN_PLACE: gate input, then dgate)
//   2 dup     read_write (N, F) f32    output (IN_PLACE: up input, then dup)
//   3 dact    read       (N, F) f32    gradient of act
//   4 gate    read       (N, F) f32    gate_proj output (unused with IN_PLACE)
//   5 up      read       (N, F) f32    up_proj output (unused with IN_PLACE)
// Dispatch: (min(ceil(count / WG), 65535), ceil(count / (65535·WG))) workgroups of WG threads, as the
// forward; element index = (wg.y · 65535 + wg.x) · WG + local.x.
// Saves nothing.

// #include "lib/grid_fold.wgsl"

override WG: u32 = 256u;
override IN_PLACE: bool = false;

struct SwigluParams {
  count: u32,
}

@group(0) @binding(0) var<uniform> params: SwigluParams;
@group(0) @binding(1) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(2) var<storage, read_write> dup: array<f32>;
@group(0) @binding(3) var<storage, read> dact: array<f32>;
@group(0) @binding(4) var<storage, read> gate: array<f32>;
@group(0) @binding(5) var<storage, read> up: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let i = (foldedWorkgroup(wg)) * WG + lid.x;
  if (i >= params.count) {
    return;
  }
  var g: f32;
  var u: f32;
  if (IN_PLACE) {
    g = dgate[i];
    u = dup[i];
  } else {
    g = gate[i];
    u = up[i];
  }
  let d = dact[i];
  let sig = 1.0 / (1.0 + exp(min(-g, 80.0)));
  dgate[i] = d * u * sig * (1.0 + g * (1.0 - sig));
  dup[i] = d * g * sig;
}
