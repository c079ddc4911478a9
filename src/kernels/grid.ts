/**
 * The most workgroups along one dimension of a dispatch (WebGPU's maxComputeWorkgroupsPerDimension
 * default and every adapter's we run on). Shaders that number a 1-D grid as wg.y · 65535 + wg.x
 * take shaders/lib/grid_fold.wgsl, its WGSL twin (tests/kernels/grid.test.ts checks they agree).
 */
export const GRID_FOLD = 65535;

/** A 1-D grid of `workgroups` folded into y past GRID_FOLD: (min(g, 65535), ceil(g / 65535)). */
export function foldGrid(workgroups: number): [number, number] {
  return workgroups > GRID_FOLD ? [GRID_FOLD, Math.ceil(workgroups / GRID_FOLD)] : [workgroups, 1];
}
