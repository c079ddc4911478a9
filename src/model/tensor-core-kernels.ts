import type { Gpu } from '../kernels/gpu.js';
import type { StoredFormat } from '../kernels/matmul.js';
import { MatmulSgm } from '../kernels/matmul-sgm.js';
import { MatmulSgmInput } from '../kernels/matmul-sgm-input.js';
import { RowScale } from '../kernels/row-scale.js';
import type { BaseFormat } from './weights.js';

/**
 * The kernels of the tensor-core path (src/model/compute-path.ts): the subgroup-matrix forward
 * matmul Y [+]= X·dequant(W)ᵀ [+ s·U·Bᵀ], the per-row f16 scale of its input, and (training) the
 * subgroup-matrix input gradient dX [+]= dY·dequant(W). Present in ModelKernels exactly when the
 * base projections run on tensor cores; the programs plan and allocate the row-scale buffer then.
 */
export interface TensorCoreKernels {
  readonly matmul: MatmulSgm;
  readonly rowScale: RowScale;
  /** The backward's dX = dY·W (training kernels only). */
  readonly input?: MatmulSgmInput;
  /** The weight formats compiled (undefined: all four). */
  readonly formats?: readonly StoredFormat[];
}

/** The stored formats of a loaded base's projections (what the tensor-core kernels compile for). */
export function baseStoredFormats(base: BaseFormat, doubleQuant: boolean): StoredFormat[] {
  if (base === 'nf4') return [doubleQuant ? 'nf4dq' : 'nf4'];
  return ['bf16', 'f32'];
}

export interface TensorCoreKernelOptions {
  /** Weight formats to compile (default all four). */
  readonly formats?: readonly StoredFormat[];
  /** Compile the input gradient too. */
  readonly backward?: boolean;
}

/** Compiles the tensor-core kernels; a DeviceError (with the reason) where subgroup matrices are missing. */
export async function createTensorCoreKernels(gpu: Gpu, options: TensorCoreKernelOptions = {}): Promise<TensorCoreKernels> {
  const matmul = await MatmulSgm.create(gpu, { formats: options.formats });
  const rowScale = await RowScale.create(gpu);
  const input = options.backward ? await MatmulSgmInput.create(gpu, { formats: options.formats }) : undefined;
  return Object.freeze({ matmul, rowScale, input, formats: options.formats });
}

/** `k` with the input gradient added (compiled now, for `formats`, default k's) unless it has it. */
export async function withInputGradient(gpu: Gpu, k: TensorCoreKernels, formats: readonly StoredFormat[] | undefined = k.formats): Promise<TensorCoreKernels> {
  if (k.input) return k;
  return Object.freeze({ ...k, input: await MatmulSgmInput.create(gpu, { formats }) });
}
