// A 1-D grid past the 65535-workgroup limit of one dimension is folded into y: the host
// dispatches (min(g, 65535), ceil(g / 65535)) workgroups (src/kernels/grid.ts, foldGrid) and the
// shader numbers them wg.y · 65535 + wg.x.
const GRID_FOLD: u32 = 65535u;

fn foldedWorkgroup(wg: vec3<u32>) -> u32 {
  return wg.y * GRID_FOLD + wg.x;
}
