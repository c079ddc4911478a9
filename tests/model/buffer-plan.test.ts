import { describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/kernels/gpu.js';
import { byteLength, numel, tensorView, type DType, type Tensor } from '../../src/kernels/tensor.js';
import { BufferUsage } from '../../src/kernels/usage.js';
import { allocatePlan, planBuffer, planBytes, planTotal } from '../../src/model/buffer-plan.js';

/** A device that records what it is asked to create (label, bytes, usage) and runs nothing. */
class RecordingGpu {
  readonly created: { label: string; bytes: number; usage: number; destroyed: boolean }[] = [];
  buffer(label: string, bytes: number, usage = BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const rec = { label, bytes: size, usage, destroyed: false };
    this.created.push(rec);
    return { size, destroy: () => void (rec.destroyed = true) } as unknown as GPUBuffer;
  }
  tensor(label: string, shape: readonly number[], dtype: DType): Tensor {
    return tensorView(this.buffer(label, byteLength(dtype, numel(shape))), label, shape, dtype);
  }
}

describe('allocatePlan: exactly the plan, by name', () => {
  it('bytes as Gpu.buffer rounds them: multiples of 16, at least 16; u8 by the byte', () => {
    expect(planBytes([1], 'f32')).toBe(16);
    expect(planBytes([5], 'f32')).toBe(32);
    expect(planBytes([3, 7], 'i32')).toBe(96); // 84 → 96
    expect(planBytes([33], 'u8')).toBe(48); // 33 → 36 (u32 words) → 48
    expect(planBytes([10], 'bf16x2')).toBe(32); // 10 bf16 = 20 bytes → 32
  });

  it('creates count buffers per entry, labelled "name [i]", in plan order; readback entries map-readable', () => {
    const gpu = new RecordingGpu();
    const plan = [
      planBuffer('x (N, D) f32', 'saved', 'step', [3, 5], 'f32', { count: 3 }),
      planBuffer('ids (N) i32', 'inputs', 'step', [7], 'i32'),
      planBuffer('logits readback (V) f32', 'scratch', 'step', [11], 'f32', { usage: 'readback', bound: false }),
    ];
    const a = allocatePlan(gpu as unknown as Gpu, plan);
    expect(gpu.created.map((c) => [c.label, c.bytes])).toEqual([
      ['x (N, D) f32 [0]', 64],
      ['x (N, D) f32 [1]', 64],
      ['x (N, D) f32 [2]', 64],
      ['ids (N) i32', 32],
      ['logits readback (V) f32', 48],
    ]);
    expect(gpu.created[4].usage).toBe(BufferUsage.MAP_READ | BufferUsage.COPY_DST);
    expect(a.bytes).toBe(planTotal(plan));
    expect(a.all('x (N, D) f32').map((t) => t.shape)).toEqual([[3, 5], [3, 5], [3, 5]]);
    expect(a.one('ids (N) i32').dtype).toBe('i32');
    expect(a.maybe('absent')).toBeUndefined();
    expect(() => a.one('x (N, D) f32')).toThrow(/has 3 buffers/);
    expect(() => a.one('absent')).toThrow(/no buffer named "absent" \(planned: x \(N, D\) f32; ids/);
    expect(a.records.map((r) => r.category)).toEqual(['saved', 'saved', 'saved', 'inputs', 'scratch']);
    a.destroy();
    expect(gpu.created.every((c) => c.destroyed)).toBe(true);
  });

  it('refuses two entries of one name, freeing what it made', () => {
    const gpu = new RecordingGpu();
    const b = planBuffer('dup', 'scratch', 'step', [4], 'f32');
    expect(() => allocatePlan(gpu as unknown as Gpu, [b, b])).toThrow(/two buffers are named "dup"/);
    expect(gpu.created.every((c) => c.destroyed)).toBe(true);
  });
});
