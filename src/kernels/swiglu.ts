import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/** SwiGLU: act = silu(gate) · up, elementwise over (N, F). Backward is in the training issue. */
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

export const SWIGLU_WORKGROUP = 256;

export class Swiglu {
  private constructor(private readonly forwardKernel: Kernel<typeof SwigluParams>) {}

  static async create(gpu: Gpu): Promise<Swiglu> {
    return new Swiglu(await Kernel.create(gpu, swigluForwardSpec, { WG: SWIGLU_WORKGROUP }));
  }

  /** act (N, F) f32 ← silu(gate) · up; gate and up (N, F) f32. */
  forward(label: string, act: Tensor, gate: Tensor, up: Tensor): Dispatch {
    expectTensor(label, gate, act.shape, 'f32');
    expectTensor(label, up, act.shape, 'f32');
    expectTensor(label, act, gate.shape, 'f32');
    const count = act.shape.reduce((a, b) => a * b, 1);
    const perRow = 65535 * SWIGLU_WORKGROUP;
    const g = groups(count, SWIGLU_WORKGROUP);
    return this.forwardKernel.bind(label, { act, gate, up }, { count }, g > 65535 ? [65535, Math.ceil(count / perRow)] : [g]);
  }
}

/** float64 reference: silu(g)·u = g·u / (1 + e^−g). */
export function swigluForwardRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = (gate[i] * up[i]) / (1 + Math.exp(-gate[i]));
  return out;
}
