import { ShapeError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { byteLength, numel, tensorView, type DType, type Tensor } from '../kernels/tensor.js';
import { BufferUsage } from '../kernels/usage.js';

/**
 * A memory plan's buffers, and the one way a program allocates them: `allocatePlan(gpu, buffers)`
 * creates exactly the listed buffers (each entry `count` times, `bytes` each) and hands them out
 * by name. The training step, the evaluation forward and generation's chunk programs build their
 * plan first (src/train/step-plan.ts, src/model/forward-plan.ts, src/generate/chunk-plan.ts) and
 * take every buffer of their own from it, so the printed plan is what the GPU holds.
 *
 * Categories: weights (frozen base), lora (trainable A/B), grads, optimizer, saved (activations kept
 * from the forward for the backward), scratch (reused buffers), inputs (token ids, labels …).
 * Lifetimes: run (whole run), step (rewritten every step), layer (reused by every layer).
 */
export type PlanCategory = 'weights' | 'lora' | 'grads' | 'optimizer' | 'saved' | 'scratch' | 'inputs';
export type PlanLifetime = 'run' | 'step' | 'layer';

export interface PlanBuffer {
  readonly name: string;
  readonly category: PlanCategory;
  readonly lifetime: PlanLifetime;
  readonly shape: readonly number[];
  readonly dtype: DType | 'u8';
  /** How many buffers of this shape (e.g. one per layer). */
  readonly count: number;
  /** Bytes of one buffer (as Gpu.buffer rounds: a multiple of 16, at least 16). */
  readonly bytes: number;
  /** Bound whole to one shader binding (so it must fit maxStorageBufferBindingSize). */
  readonly bound: boolean;
  /**
   * Who allocates it: the program that plans it (default), the kernels (shared by every program),
   * the model loader, the LoRA arena, the optimiser (its state and the grad-norm program's) or the
   * Trainer. The arena, the optimiser and the Trainer allocate their entries through allocatePlan too.
   */
  readonly allocatedBy?: 'kernels' | 'model' | 'arena' | 'optimizer' | 'trainer';
  /** 'readback': a MAP_READ | COPY_DST staging buffer (default: a storage buffer). */
  readonly usage?: 'storage' | 'readback';
}

/** Bytes of one buffer of `shape` × `dtype`, rounded as Gpu.buffer allocates. */
export function planBytes(shape: readonly number[], dtype: DType | 'u8'): number {
  const raw = dtype === 'u8' ? Math.ceil(numel(shape) / 4) * 4 : byteLength(dtype, numel(shape));
  return Math.max(16, Math.ceil(raw / 16) * 16);
}

export interface PlanBufferOptions {
  readonly count?: number;
  readonly bound?: boolean;
  readonly allocatedBy?: PlanBuffer['allocatedBy'];
  readonly usage?: PlanBuffer['usage'];
}

/** One plan entry (frozen). */
export function planBuffer(name: string, category: PlanCategory, lifetime: PlanLifetime, shape: readonly number[], dtype: DType | 'u8', o: PlanBufferOptions = {}): PlanBuffer {
  return Object.freeze({
    name,
    category,
    lifetime,
    shape: Object.freeze([...shape]),
    dtype,
    count: o.count ?? 1,
    bytes: planBytes(shape, dtype),
    bound: o.bound ?? true,
    ...(o.allocatedBy ? { allocatedBy: o.allocatedBy } : {}),
    ...(o.usage && o.usage !== 'storage' ? { usage: o.usage } : {}),
  });
}

/** Σ bytes × count of `buffers`. */
export function planTotal(buffers: readonly PlanBuffer[]): number {
  return buffers.reduce((a, b) => a + b.bytes * b.count, 0);
}

/** One GPU buffer `allocatePlan` created: its plan entry's name and category, the label it got, its bytes. */
export interface PlanAllocationRecord {
  readonly name: string;
  readonly label: string;
  readonly category: PlanCategory;
  readonly bytes: number;
}

/** The buffers of a plan, allocated: taken by name; `destroy` frees them all. */
export class PlanAllocation {
  private constructor(
    private readonly byName: ReadonlyMap<string, { readonly entry: PlanBuffer; readonly tensors: readonly Tensor[] }>,
    /** Every buffer created, in plan order. */
    readonly records: readonly PlanAllocationRecord[],
    private readonly buffers: readonly GPUBuffer[],
  ) {}

  /**
   * Allocates every entry of `plan` (the caller passes its own): `count` buffers of `bytes` each,
   * labelled with the entry's name (and " [i]" when count > 1). Duplicate names are refused: a
   * name is how the program finds its buffer.
   */
  static allocate(gpu: Gpu, plan: readonly PlanBuffer[]): PlanAllocation {
    const byName = new Map<string, { entry: PlanBuffer; tensors: Tensor[] }>();
    const records: PlanAllocationRecord[] = [];
    const buffers: GPUBuffer[] = [];
    try {
      for (const entry of plan) {
        if (byName.has(entry.name)) throw new ShapeError(`memory plan: two buffers are named "${entry.name}"`);
        if (entry.dtype === 'u8') throw new ShapeError(`memory plan: "${entry.name}" is u8, which no program allocates as a tensor`);
        const tensors: Tensor[] = [];
        for (let i = 0; i < entry.count; i++) {
          const label = entry.count > 1 ? `${entry.name} [${i}]` : entry.name;
          const t =
            entry.usage === 'readback'
              ? tensorView(gpu.buffer(label, entry.bytes, BufferUsage.MAP_READ | BufferUsage.COPY_DST), label, entry.shape, entry.dtype)
              : gpu.tensor(label, entry.shape, entry.dtype);
          buffers.push(t.buffer);
          tensors.push(t);
          records.push({ name: entry.name, label, category: entry.category, bytes: t.buffer.size });
        }
        byName.set(entry.name, { entry, tensors });
      }
    } catch (e) {
      for (const b of buffers) b.destroy();
      throw e;
    }
    return new PlanAllocation(byName, records, buffers);
  }

  /** The one buffer of entry `name` (an entry of count 1). */
  one(name: string): Tensor {
    const got = this.all(name);
    if (got.length !== 1) throw new ShapeError(`memory plan: "${name}" has ${got.length} buffers; take them with all()`);
    return got[0];
  }

  /** The buffers of entry `name`, in order. */
  all(name: string): readonly Tensor[] {
    const got = this.byName.get(name);
    if (!got) throw new ShapeError(`memory plan: no buffer named "${name}" (planned: ${[...this.byName.keys()].join('; ')})`);
    return got.tensors;
  }

  /** The one buffer of `name` when the plan has it. */
  maybe(name: string): Tensor | undefined {
    return this.byName.has(name) ? this.one(name) : undefined;
  }

  /** Bytes of every buffer created. */
  get bytes(): number {
    return this.records.reduce((a, r) => a + r.bytes, 0);
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}

/** `PlanAllocation.allocate`. */
export function allocatePlan(gpu: Gpu, plan: readonly PlanBuffer[]): PlanAllocation {
  return PlanAllocation.allocate(gpu, plan);
}

