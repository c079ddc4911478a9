import { ShapeError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { numel, tensorView, type Tensor } from '../kernels/tensor.js';
import { allocatePlan, planBuffer, type PlanAllocation, type PlanBuffer } from '../model/buffer-plan.js';
import { PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { peftKey, type LoraAdapter, type LoraPair } from '../model/lora.js';

/**
 * All trainable tensors of a run (the LoRA A and B of every targeted projection) as views of ONE
 * f32 buffer, with a matching gradient buffer at the same offsets. The optimiser then updates the
 * whole adapter in one dispatch (or a few, where a buffer is larger than the device's binding
 * limit), the gradient norm is one reduction over one buffer, and the step clears every gradient
 * with one clearBuffer.
 *
 * Each tensor starts at a multiple of ARENA_ALIGN_ELEMENTS = 256 elements (1 KiB): a multiple of
 * the 256-byte storage-binding offset alignment, and of the 8-bit optimiser's 256-element block,
 * so that no quantisation block straddles two tensors (bitsandbytes quantises each tensor on its
 * own). The padding between tensors is zero in both buffers and stays zero: its gradient is zero,
 * so every optimiser update leaves it at zero and it adds nothing to the gradient norm.
 */
export const ARENA_ALIGN_ELEMENTS = 256;

export interface ArenaTensorSpec {
  /** Unique name, e.g. the PEFT key of a LoRA tensor. */
  readonly name: string;
  readonly shape: readonly number[];
}

export interface ArenaSlot extends ArenaTensorSpec {
  /** First element of the tensor in the arena (multiple of ARENA_ALIGN_ELEMENTS). */
  readonly offset: number;
  /** Elements of the tensor (numel(shape)); the slot then has zero padding up to the next offset. */
  readonly count: number;
}

export interface ArenaLayout {
  readonly slots: readonly ArenaSlot[];
  /** Elements of the whole arena, padding included (a multiple of ARENA_ALIGN_ELEMENTS). */
  readonly count: number;
}

/** Pure: where each tensor goes, in the order given. Refuses duplicate names and empty tensors. */
export function planArena(specs: readonly ArenaTensorSpec[]): ArenaLayout {
  const seen = new Set<string>();
  const slots: ArenaSlot[] = [];
  let offset = 0;
  for (const s of specs) {
    if (seen.has(s.name)) throw new ShapeError(`planArena: tensor "${s.name}" is listed twice`);
    seen.add(s.name);
    const count = numel(s.shape);
    if (!Number.isInteger(count) || count < 1) throw new ShapeError(`planArena: tensor "${s.name}" has shape [${s.shape.join(', ')}] with no elements`);
    slots.push(Object.freeze({ name: s.name, shape: Object.freeze([...s.shape]), offset, count }));
    offset += Math.ceil(count / ARENA_ALIGN_ELEMENTS) * ARENA_ALIGN_ELEMENTS;
  }
  if (slots.length === 0) throw new ShapeError('planArena: no tensors given');
  return Object.freeze({ slots: Object.freeze(slots), count: offset });
}

/**
 * The arena's memory-plan entries: "<label> params" and "<label> grads", (count) f32 each —
 * what ParamArena.create allocates, exactly (allocatePlan).
 */
export function planParamArena(label: string, layout: ArenaLayout): PlanBuffer[] {
  return [
    planBuffer(`${label} params`, 'lora', 'run', [layout.count], 'f32', { allocatedBy: 'arena' }),
    planBuffer(`${label} grads`, 'grads', 'run', [layout.count], 'f32', { allocatedBy: 'arena' }),
  ];
}

/** Bytes the arena allocates: parameters and gradients, f32 each. */
export function arenaBytes(layout: ArenaLayout): { params: number; grads: number } {
  return { params: layout.count * 4, grads: layout.count * 4 };
}

export class ParamArena {
  private readonly byName: ReadonlyMap<string, ArenaSlot>;

  private constructor(
    readonly layout: ArenaLayout,
    /** (count) f32 — every trainable parameter, flat; the tensors are views of it. */
    readonly params: Tensor,
    /** (count) f32 — their gradients at the same offsets; the backward pass adds into views of it. */
    readonly grads: Tensor,
    private readonly allocation: PlanAllocation,
  ) {
    this.byName = new Map(layout.slots.map((s) => [s.name, s]));
  }

  /** Allocates both buffers from planParamArena (zero-filled, as WebGPU buffers start). */
  static create(gpu: Gpu, label: string, specs: readonly ArenaTensorSpec[]): ParamArena {
    const layout = planArena(specs);
    const allocation = allocatePlan(gpu, planParamArena(label, layout));
    return new ParamArena(layout, allocation.one(`${label} params`), allocation.one(`${label} grads`), allocation);
  }

  get slots(): readonly ArenaSlot[] {
    return this.layout.slots;
  }

  get count(): number {
    return this.layout.count;
  }

  slot(name: string): ArenaSlot {
    const s = this.byName.get(name);
    if (!s) throw new ShapeError(`ParamArena: no tensor named "${name}" (it holds ${this.layout.slots.length} tensors, e.g. ${this.layout.slots[0].name})`);
    return s;
  }

  /** The parameter tensor `name` as a view of the arena (same buffer, no copy). */
  param(name: string): Tensor {
    const s = this.slot(name);
    return tensorView(this.params.buffer, name, s.shape, 'f32', this.params.offset + s.offset * 4);
  }

  /** The gradient of `name`, a view of the gradient buffer at the same offset. */
  grad(name: string): Tensor {
    const s = this.slot(name);
    return tensorView(this.grads.buffer, `grad ${name}`, s.shape, 'f32', this.grads.offset + s.offset * 4);
  }

  /** Records the zeroing of every gradient (once per optimiser step, before the first micro-batch). */
  encodeClearGrads(encoder: GPUCommandEncoder): void {
    encoder.clearBuffer(this.grads.buffer, this.grads.offset, this.grads.byteSize);
  }

  /** Frees both buffers. */
  destroy(): void {
    this.allocation.destroy();
  }
}

/** The arena order of a LoRA adapter: layer by layer, projections in PROJECTIONS order, A then B. */
export function loraArenaSpecs(adapter: LoraAdapter): ArenaTensorSpec[] {
  const specs: ArenaTensorSpec[] = [];
  adapter.layers.forEach((entry, l) => {
    for (const p of PROJECTIONS) {
      const pair = entry[p];
      if (!pair) continue;
      specs.push({ name: peftKey(l, p, 'A'), shape: pair.a.shape }, { name: peftKey(l, p, 'B'), shape: pair.b.shape });
    }
  });
  return specs;
}

/**
 * The same order from the model's shapes alone (for the memory plan, before any adapter exists):
 * layer by layer, the targeted projections in PROJECTIONS order, A (r, K) then B (Nout, r).
 */
export function loraArenaSpecsFor(c: Qwen3Config, r: number, targets: readonly Projection[]): ArenaTensorSpec[] {
  const specs: ArenaTensorSpec[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    for (const p of PROJECTIONS) {
      if (!targets.includes(p)) continue;
      const [o, k] = projectionShape(c, p);
      specs.push({ name: peftKey(l, p, 'A'), shape: [r, k] }, { name: peftKey(l, p, 'B'), shape: [o, r] });
    }
  }
  return specs;
}

export interface ArenaLoraAdapter {
  readonly arena: ParamArena;
  /** The same adapter with every A and B a view of arena.params. */
  readonly adapter: LoraAdapter;
  /** The gradients in the adapter's structure: grads[l][p].a is dA (R, K), .b is dB (Nout, R). */
  readonly grads: readonly Partial<Record<Projection, LoraPair>>[];
}

/**
 * Moves an adapter (from createLoraAdapter or loadLoraAdapter) into a new arena: one GPU copy per
 * tensor, recorded and submitted here, then the adapter's own buffers are destroyed when
 * `destroySource` is set (the copies run first: WebGPU frees a destroyed buffer only after the
 * submitted work that uses it). Returns the arena-backed adapter and its gradient views.
 */
export function moveLoraToArena(gpu: Gpu, label: string, source: LoraAdapter, options: { destroySource?: boolean } = {}): ArenaLoraAdapter {
  const arena = ParamArena.create(gpu, label, loraArenaSpecs(source));
  const enc = gpu.device.createCommandEncoder({ label: `${label}: copy adapter into arena` });
  const layers: Partial<Record<Projection, LoraPair>>[] = [];
  const grads: Partial<Record<Projection, LoraPair>>[] = [];
  source.layers.forEach((entry, l) => {
    const views: Partial<Record<Projection, LoraPair>> = {};
    const gviews: Partial<Record<Projection, LoraPair>> = {};
    for (const p of PROJECTIONS) {
      const pair = entry[p];
      if (!pair) continue;
      const a = arena.param(peftKey(l, p, 'A'));
      const b = arena.param(peftKey(l, p, 'B'));
      for (const [src, dst] of [[pair.a, a], [pair.b, b]] as const) {
        if (src.dtype !== 'f32') throw new ShapeError(`moveLoraToArena: ${src.label} is ${src.dtype}, expected f32`);
        enc.copyBufferToBuffer(src.buffer, src.offset, dst.buffer, dst.offset, dst.byteSize);
      }
      views[p] = { a, b };
      gviews[p] = { a: arena.grad(peftKey(l, p, 'A')), b: arena.grad(peftKey(l, p, 'B')) };
    }
    layers.push(views);
    grads.push(gviews);
  });
  gpu.device.queue.submit([enc.finish()]);
  if (options.destroySource) {
    for (const entry of source.layers) {
      for (const pair of Object.values(entry)) {
        pair?.a.buffer.destroy();
        pair?.b.buffer.destroy();
      }
    }
  }
  const adapter: LoraAdapter = Object.freeze({ config: source.config, scale: source.scale, layers });
  return Object.freeze({ arena, adapter, grads });
}

/** Chunks of flat buffers start at multiples of this many elements (see chunkElements). */
export const CHUNK_UNIT = 16384;

/**
 * Elements per chunk so that a chunk fits one storage binding and starts at a 256-byte aligned
 * offset: the largest multiple of 16384 elements (64 KiB) within maxStorageBufferBindingSize.
 * The 16384 also keeps an 8-bit optimiser's per-block absmax (one f32 per 256 elements) aligned.
 */
export function chunkElements(gpu: Gpu, requested?: number): number {
  const unit = CHUNK_UNIT;
  if (requested !== undefined) {
    if (!Number.isInteger(requested) || requested < 1 || requested % unit !== 0) {
      throw new ShapeError(`chunkElements: ${requested} must be a positive multiple of ${unit}`);
    }
    return Math.min(requested, chunkElementsFor(gpu.limits.maxStorageBufferBindingSize));
  }
  return chunkElementsFor(gpu.limits.maxStorageBufferBindingSize);
}

/** The largest chunk (a multiple of CHUNK_UNIT elements, at least one) within a storage binding of maxBindingBytes. */
export function chunkElementsFor(maxBindingBytes: number): number {
  return Math.max(CHUNK_UNIT, Math.floor(maxBindingBytes / 4 / CHUNK_UNIT) * CHUNK_UNIT);
}
