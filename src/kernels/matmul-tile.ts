import { DeviceLimitError, ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';

/**
 * Output tile of one workgroup: bm × bn outputs, tm × tn per thread, reduction steps of bk;
 * wn threads along N in each group of 32 invocations (default 16, or bn/tn when smaller).
 */
export interface MatmulTile {
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  readonly tm: number;
  readonly tn: number;
  readonly wn?: number;
}

/** Threads along N in each group of 32 invocations. */
export function tileWarpN(t: MatmulTile): number {
  return t.wn ?? Math.min(16, t.bn / t.tn);
}

export function tileName(t: MatmulTile): string {
  return `${t.bm}x${t.bn}x${t.bk}/${t.tm}x${t.tn}` + (t.wn === undefined ? '' : `/${t.wn}`);
}

/**
 * The checks every register-tiled matmul kernel (matmul_forward, matmul_backward_input,
 * matmul_weight_grad) makes of a tile: per-thread sizes, reduction step, thread count and the
 * 32-invocation layout, then the device's workgroup memory. `problems` are the kernel's own
 * (its operand-load rules), reported together with these; `bytes` is its workgroup memory.
 */
export function checkTileLimits(gpu: Gpu, where: string, t: MatmulTile, problems: readonly string[], bytes: number): void {
  const threads = (t.bm / t.tm) * (t.bn / t.tn);
  const all: string[] = [];
  if (![4, 8].includes(t.tm) || ![4, 8].includes(t.tn)) all.push('tm and tn must be 4 or 8');
  if (![8, 16, 32].includes(t.bk)) all.push('bk must be 8, 16 or 32');
  if (t.bm % 32 !== 0 || t.bn % 32 !== 0) all.push('bm and bn must be multiples of 32');
  if (!Number.isInteger(threads) || threads % 32 !== 0 || threads > 256 || threads > gpu.limits.maxComputeInvocationsPerWorkgroup) {
    all.push(`(bm/tm)·(bn/tn) = ${threads} threads must be a multiple of 32, ≤ 256`);
  }
  const wn = tileWarpN(t);
  if (![4, 8, 16, 32].includes(wn) || (t.bn / t.tn) % wn !== 0 || (t.bm / t.tm) % (32 / wn) !== 0) {
    all.push(`wn = ${wn} must be 4, 8, 16 or 32, divide bn/tn and have 32/wn divide bm/tm`);
  }
  all.push(...problems);
  if (all.length > 0) throw new ShapeError(`${where}: ${all.join('; ')}`);
  if (bytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new DeviceLimitError(
      `${where}: needs ${bytes} bytes of workgroup memory, this device allows ${gpu.limits.maxComputeWorkgroupStorageSize}; use a smaller bk or tile`,
    );
  }
}
