import type { Gpu } from '../../src/kernels/gpu.js';
import type { LinearWeight, StoredFormat } from '../../src/kernels/matmul.js';
import { nf4DequantizeRef, nf4DoubleDequantizeRef, nf4DoubleQuantizeRef, nf4QuantizeRef } from '../../src/kernels/nf4.js';
import { f32ToBf16Array, roundToBf16 } from '../../src/model/bf16.js';
import type { Rng } from './random.js';

/**
 * A random (n, k) weight stored as `format` on the GPU and its dense float64 values (what the GPU
 * must multiply by: bf16-rounded, NF4-dequantised). NF4 needs n·k % 64 == 0.
 */
export function makeTestWeight(gpu: Gpu, rng: Rng, format: StoredFormat, n: number, k: number): { w: LinearWeight; dense: ArrayLike<number> } {
  if (format === 'f32') {
    const v = rng.f32(n * k, 0.05);
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'f32', v) }, dense: v };
  }
  const values = roundToBf16(rng.f32(n * k, 0.05));
  if (format === 'bf16') {
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w', [n, k], 'bf16x2', f32ToBf16Array(values)) }, dense: values };
  }
  const q = nf4QuantizeRef(values);
  const data = gpu.tensorFrom('w', [n, k], 'nf4x8', q.packed);
  if (format === 'nf4') {
    const absmax = gpu.tensorFrom('absmax', [q.absmax.length], 'f32', q.absmax);
    return { w: { format: 'nf4', nOut: n, k, data, absmax }, dense: nf4DequantizeRef(q.packed, q.absmax, n * k) };
  }
  const dq = nf4DoubleQuantizeRef(q.absmax);
  const doubleQuant = {
    codes: gpu.tensorFrom('codes', [q.absmax.length], 'u8x4', dq.codes),
    absmax2: gpu.tensorFrom('absmax2', [dq.absmax2.length], 'f32', dq.absmax2),
    offset: dq.offset,
  };
  return { w: { format: 'nf4', nOut: n, k, data, doubleQuant }, dense: nf4DequantizeRef(q.packed, nf4DoubleDequantizeRef(dq), n * k) };
}

export function destroyTestWeight(w: LinearWeight): void {
  for (const t of [w.data, w.absmax, w.doubleQuant?.codes, w.doubleQuant?.absmax2]) t?.buffer.destroy();
}
