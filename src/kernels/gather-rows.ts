import { ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';

/** out (rows, W) f32 ← src[index[i]] rows of src (srcRows, W) f32. */
export const GatherRowsParams = defineParams('GatherRowsParams', [
  ['rows', 'u32'],
  ['width', 'u32'],
  ['srcRows', 'u32'],
] as const);

export const gatherRowsForwardSpec: KernelSpec<typeof GatherRowsParams> = {
  file: 'gather_rows_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'out', access: 'read_write' },
    { name: 'src', access: 'read' },
    { name: 'index', access: 'read' },
  ],
  params: GatherRowsParams,
};

const WG = 256;

export class GatherRows {
  private constructor(private readonly kernel: Kernel<typeof GatherRowsParams>) {}

  static async create(gpu: Gpu): Promise<GatherRows> {
    return new GatherRows(await Kernel.create(gpu, gatherRowsForwardSpec, { WG }));
  }

  /** out (rows, W) ← src (srcRows, W) rows picked by index (rows) i32. */
  forward(label: string, out: Tensor, src: Tensor, index: Tensor): Dispatch {
    const [rows, width] = out.shape;
    if (out.shape.length !== 2 || src.shape.length !== 2) throw new ShapeError(`${label}: gatherRows needs 2-D out and src`);
    expectTensor(label, src, [src.shape[0], width], 'f32');
    expectTensor(label, out, [rows, width], 'f32');
    expectTensor(label, index, [rows], 'i32');
    return this.kernel.bind(label, { out, src, index }, { rows, width, srcRows: src.shape[0] }, [groups(width, WG), rows]);
  }
}

/** Reference: plain copy of the indexed rows (NaN for an index outside src). */
export function gatherRowsRef(src: Float32Array, width: number, index: ArrayLike<number>): Float64Array {
  const srcRows = src.length / width;
  const out = new Float64Array(index.length * width);
  for (let i = 0; i < index.length; i++) {
    for (let c = 0; c < width; c++) out[i * width + c] = index[i] >= 0 && index[i] < srcRows ? src[index[i] * width + c] : NaN;
  }
  return out;
}
