import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * Deterministic sum reduction in one workgroup: out (1) f32 ← Σ values (n) f32, or with
 * `accumulate` out += Σ values (to total per-chunk losses across chunks on the GPU). The addition
 * order depends only on n, so repeated runs give identical bits.
 */
export const SumParams = defineParams('SumParams', [
  ['n', 'u32'],
  ['accumulate', 'u32'],
] as const);

export const sumReduceSpec: KernelSpec<typeof SumParams> = {
  file: 'reduce_sum.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'out', access: 'read_write' },
    { name: 'values', access: 'read' },
  ],
  params: SumParams,
};

export const SUM_WORKGROUP = 256;

export interface SumReduceTensors {
  /** (1) f32 — the sum; read first when accumulating. */
  out: Tensor;
  /** f32 of n elements, any shape. */
  values: Tensor;
}

export interface SumReduceShape {
  n: number;
  /** Add into out instead of overwriting it. */
  accumulate: boolean;
}

export class SumReduce {
  private constructor(private readonly kernel: Kernel<typeof SumParams>) {}

  static async create(gpu: Gpu): Promise<SumReduce> {
    return new SumReduce(await Kernel.create(gpu, sumReduceSpec, { WG: SUM_WORKGROUP }));
  }

  /** out (1) f32 ← (accumulate ? out : 0) + Σ values (n) f32. */
  forward(label: string, t: SumReduceTensors, shape: SumReduceShape): Dispatch {
    const { n, accumulate } = shape;
    const where = `${label} (sumReduce)`;
    if (!Number.isInteger(n) || n < 1) throw new ShapeError(`${where}: n=${n} must be a positive integer`);
    expectTensor(where, t.out, [1], 'f32');
    if (t.values.dtype !== 'f32' || numel(t.values.shape) !== n) {
      throw new ShapeError(`${where}: values ${t.values.label} is ${t.values.dtype} [${t.values.shape.join(', ')}], expected f32 of ${n} elements`);
    }
    if (t.out.buffer === t.values.buffer) {
      throw new ShapeError(`${where}: out ${t.out.label} and values ${t.values.label} share a buffer; give the sum its own buffer`);
    }
    return this.kernel.bind(label, { out: t.out, values: t.values }, { n, accumulate: accumulate ? 1 : 0 }, [1]);
  }
}

/** float64 reference: prior + Σ values. */
export function sumReduceRef(values: ArrayLike<number>, prior = 0): number {
  let s = prior;
  for (let i = 0; i < values.length; i++) s += values[i];
  return s;
}
