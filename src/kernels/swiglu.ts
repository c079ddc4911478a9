import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectDisjoint, expectNoReadWriteAlias, expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { foldGrid } from './grid.js';

/**
 * SwiGLU: act = silu(gate) · up, elementwise over (N, F). Backward: dgate = dact·u·σ(g)·(1 + g·(1 − σ(g))),
 * dup = dact·silu(g), written to their own buffers or in place over gate and up.
 */
export const SwigluParams = defineParams('SwigluParams', [['count', 'u32']] as const);

export const swigluForwardSpec: KernelSpec<typeof SwigluParams> = {
  file: 'swiglu_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'act', access: 'read_write' },
    { name: 'gate', access: 'read' },
    { name: 'up', access: 'read' },
  ],
  params: SwigluParams,
};

export const swigluBackwardSpec: KernelSpec<typeof SwigluParams> = {
  file: 'swiglu_backward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'dgate', access: 'read_write' },
    { name: 'dup', access: 'read_write' },
    { name: 'dact', access: 'read' },
    { name: 'gate', access: 'read' },
    { name: 'up', access: 'read' },
  ],
  params: SwigluParams,
};

export const SWIGLU_WORKGROUP = 256;

export interface SwigluBackwardTensors {
  /** (N, F) f32 — gradient of gate, overwritten. */
  dgate: Tensor;
  /** (N, F) f32 — gradient of up, overwritten. */
  dup: Tensor;
  /** (N, F) f32 — gradient of act. */
  dact: Tensor;
  /** (N, F) f32 — the forward's gate input. */
  gate: Tensor;
  /** (N, F) f32 — the forward's up input. */
  up: Tensor;
}

export interface SwigluBackwardInPlaceTensors {
  /** (N, F) f32 — the forward's gate input; overwritten with dgate. */
  gate: Tensor;
  /** (N, F) f32 — the forward's up input; overwritten with dup. */
  up: Tensor;
  /** (N, F) f32 — gradient of act. */
  dact: Tensor;
}

export class Swiglu {
  private constructor(
    private readonly forwardKernel: Kernel<typeof SwigluParams>,
    private readonly backwardKernel: Kernel<typeof SwigluParams>,
    private readonly backwardInPlaceKernel: Kernel<typeof SwigluParams>,
    /** (4) f32 — bound to the unused `gate` / `up` bindings of the in-place backward. */
    private readonly placeholder: Tensor,
  ) {}

  static async create(gpu: Gpu): Promise<Swiglu> {
    const [forward, backward, inPlace] = await Promise.all([
      Kernel.create(gpu, swigluForwardSpec, { WG: SWIGLU_WORKGROUP }),
      Kernel.create(gpu, swigluBackwardSpec, { WG: SWIGLU_WORKGROUP, IN_PLACE: false }),
      Kernel.create(gpu, swigluBackwardSpec, { WG: SWIGLU_WORKGROUP, IN_PLACE: true }),
    ]);
    return new Swiglu(forward, backward, inPlace, gpu.tensor('swiglu in-place placeholder (4) f32, never read', [4], 'f32'));
  }

  /** act (N, F) f32 ← silu(gate) · up; gate and up (N, F) f32. */
  forward(label: string, act: Tensor, gate: Tensor, up: Tensor): Dispatch {
    expectTensor(label, gate, act.shape, 'f32');
    expectTensor(label, up, act.shape, 'f32');
    expectTensor(label, act, gate.shape, 'f32');
    const count = act.shape.reduce((a, b) => a * b, 1);
    return this.forwardKernel.bind(label, { act, gate, up }, { count }, elementGrid(count));
  }

  /** dgate, dup (N, F) f32 ← gradients of act = silu(gate)·up given dact; all five tensors (N, F) f32. */
  backward(label: string, t: SwigluBackwardTensors): Dispatch {
    const where = `${label} (swigluBackward)`;
    for (const other of [t.dup, t.dact, t.gate, t.up]) expectTensor(where, other, t.dgate.shape, 'f32');
    expectTensor(where, t.dgate, t.dgate.shape, 'f32');
    expectNoReadWriteAlias(where, [t.dgate, t.dup], [t.dact, t.gate, t.up], 'give it its own buffer, or use backwardInPlace to overwrite gate and up');
    expectDisjoint(where, t.dgate, t.dup);
    const count = numel(t.dgate.shape);
    return this.backwardKernel.bind(label, { dgate: t.dgate, dup: t.dup, dact: t.dact, gate: t.gate, up: t.up }, { count }, elementGrid(count));
  }

  /**
   * The same gradients written over the forward's inputs: gate (N, F) f32 ← dgate, up (N, F) f32 ←
   * dup, given dact (N, F) f32. Saves the two (N, F) gradient buffers.
   */
  backwardInPlace(label: string, t: SwigluBackwardInPlaceTensors): Dispatch {
    const where = `${label} (swigluBackward in place)`;
    expectTensor(where, t.gate, t.gate.shape, 'f32');
    expectTensor(where, t.up, t.gate.shape, 'f32');
    expectTensor(where, t.dact, t.gate.shape, 'f32');
    for (const out of [t.gate, t.up]) {
      if (out.buffer === t.dact.buffer) {
        throw new ShapeError(`${where}: ${out.label} (overwritten) shares a GPU buffer with dact ${t.dact.label}, which the dispatch reads; give dact its own buffer`);
      }
    }
    expectDisjoint(where, t.gate, t.up);
    const count = numel(t.gate.shape);
    const p = this.placeholder;
    return this.backwardInPlaceKernel.bind(label, { dgate: t.gate, dup: t.up, dact: t.dact, gate: p, up: p }, { count }, elementGrid(count));
  }
}

/** One element per invocation; grids past 65535 workgroups fold into y (the shaders' index rule). */
function elementGrid(count: number): [number, number] {
  return foldGrid(groups(count, SWIGLU_WORKGROUP));
}

/** float64 reference: silu(g)·u = g·u / (1 + e^−g). */
export function swigluForwardRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = (gate[i] * up[i]) / (1 + Math.exp(-gate[i]));
  return out;
}

/** float64 reference of the backward pass: dgate = dact·u·σ(g)·(1 + g·(1 − σ(g))), dup = dact·g·σ(g). */
export function swigluBackwardRef(
  dact: ArrayLike<number>,
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
): { dgate: Float64Array; dup: Float64Array } {
  const dgate = new Float64Array(gate.length);
  const dup = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const s = 1 / (1 + Math.exp(-g));
    dgate[i] = dact[i] * up[i] * s * (1 + g * (1 - s));
    dup[i] = dact[i] * g * s;
  }
  return { dgate, dup };
}
