import type { Gpu } from '../kernels/gpu.js';
import type { StoredFormat } from '../kernels/matmul.js';
import { AttentionSgm } from '../kernels/attention-sgm.js';
import { attentionOnTensorCores } from './compute-path.js';
import { AttentionSgmBackward } from '../kernels/attention-sgm-backward.js';
import { MatmulSgm } from '../kernels/matmul-sgm.js';
import { MatmulSgmInput } from '../kernels/matmul-sgm-input.js';
import { RowScale } from '../kernels/row-scale.js';
import type { BaseFormat } from './weights.js';

/**
 * The kernels of the tensor-core path (src/model/compute-path.ts): the subgroup-matrix forward
 * matmul Y [+]= X·dequant(W)ᵀ [+ s·U·Bᵀ], the per-row f16 scale of its input, and (training) the
 * subgroup-matrix input gradient dX [+]= dY·dequant(W). Present in ModelKernels exactly when the
 * base projections run on tensor cores; the programs plan and allocate the row-scale buffer then.
 * The chunked loss head's lm_head (logits = xf·Eᵀ, dxf = dlogits·E) runs on them too
 * (src/model/loss-head.ts): its format is compiled with the plain epilogue (`headFormats`).
 */
export interface TensorCoreKernels {
  readonly matmul: MatmulSgm;
  readonly rowScale: RowScale;
  /** The backward's dX = dY·W (training kernels only). */
  readonly input?: MatmulSgmInput;
  /** The weight formats compiled with every epilogue, for the projections (undefined: all four). */
  readonly formats?: readonly StoredFormat[];
  /** The lm_head's formats, compiled beyond `formats` with the plain epilogue only (undefined: none). */
  readonly headFormats?: readonly StoredFormat[];
  /**
   * The packed flash attention on subgroup matrices, where the head dim allows it
   * (compute-path.ts attentionOnTensorCores, which decides the plan the same way).
   */
  readonly attention?: AttentionSgm;
  /** Its backward (training kernels only). */
  readonly attentionBackward?: AttentionSgmBackward;
}

/**
 * The lm_head's stored format: the loader keeps the tied embedding (Qwen3-4B) and an untied
 * lm_head (Qwen3-8B) bf16 whatever the projections' format (src/model/load.ts); the subgroup-matrix
 * kernels decode it to f16 while staging (exact for |e| ≥ 2^-14: bf16's 8 mantissa bits fit f16's 10).
 */
export const LM_HEAD_FORMAT: StoredFormat = 'bf16';

/** Whether `k` has the variants the loss head's lm_head of `format` needs (the plain forward and, with `backward`, the plain input gradient). */
export function tensorCoresHaveHead(k: TensorCoreKernels, format: StoredFormat, backward: boolean): boolean {
  if (backward && !k.input) return false;
  return k.formats === undefined || k.formats.includes(format) || (k.headFormats ?? []).includes(format);
}

/** The stored formats of a loaded base's projections (what the tensor-core kernels compile for; the lm_head's bf16 comes with `headFormats`). */
export function baseStoredFormats(base: BaseFormat, doubleQuant: boolean): StoredFormat[] {
  if (base === 'nf4') return [doubleQuant ? 'nf4dq' : 'nf4'];
  return ['bf16', 'f32'];
}

export interface TensorCoreKernelOptions {
  /** Weight formats to compile (default all four). */
  readonly formats?: readonly StoredFormat[];
  /**
   * The lm_head's formats, compiled beyond `formats` with the plain epilogue only (default
   * [LM_HEAD_FORMAT]: 3 forward and 4 input-gradient pipelines more where the projections are NF4).
   */
  readonly headFormats?: readonly StoredFormat[];
  /** Compile the input gradient too (and the attention backward, with headDim). */
  readonly backward?: boolean;
  /** The model's head dim: the packed attention is compiled for it where the kernels take it. */
  readonly headDim?: number;
}

/** Compiles the tensor-core kernels; a DeviceError (with the reason) where subgroup matrices are missing. */
export async function createTensorCoreKernels(gpu: Gpu, options: TensorCoreKernelOptions = {}): Promise<TensorCoreKernels> {
  const formats = options.formats;
  // all four formats compiled: the lm_head's among them
  const headFormats = formats === undefined ? undefined : (options.headFormats ?? [LM_HEAD_FORMAT]).filter((f) => !formats.includes(f));
  const matmul = await MatmulSgm.create(gpu, { formats, plainFormats: headFormats });
  const rowScale = await RowScale.create(gpu);
  const input = options.backward ? await MatmulSgmInput.create(gpu, { formats, plainFormats: headFormats }) : undefined;
  const dh = options.headDim;
  const attends = dh !== undefined && attentionOnTensorCores('tensor-cores', dh);
  const attention = attends ? await AttentionSgm.create(gpu, { headDim: dh }) : undefined;
  const attentionBackward = attention && options.backward ? await AttentionSgmBackward.create(gpu, { headDim: attention.headDim, headScale: attention.headScale }) : undefined;
  return Object.freeze({ matmul, rowScale, input, formats, headFormats, attention, attentionBackward });
}

/** `k` with the input gradient (for `formats`, default k's, and the lm_head's) and the attention backward (where k has the attention) added, compiled now unless k has them. */
export async function withInputGradient(gpu: Gpu, k: TensorCoreKernels, formats: readonly StoredFormat[] | undefined = k.formats): Promise<TensorCoreKernels> {
  const input = k.input ?? (await MatmulSgmInput.create(gpu, { formats, plainFormats: k.headFormats ?? [LM_HEAD_FORMAT] }));
  const attentionBackward = k.attentionBackward ?? (k.attention ? await AttentionSgmBackward.create(gpu, { headDim: k.attention.headDim, headScale: k.attention.headScale }) : undefined);
  if (input === k.input && attentionBackward === k.attentionBackward) return k;
  return Object.freeze({ ...k, input, attentionBackward });
}
