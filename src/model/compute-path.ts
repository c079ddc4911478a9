import { DeviceError } from '../errors.js';
import { ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS } from '../kernels/attention-sgm-backward.js';
import { headScaleSpec } from '../kernels/head-scale.js';
import { storageBufferCount } from '../kernels/kernel.js';
import { matmulSgmForwardSpec, sgmUnsupportedReason, type SgmAdapter } from '../kernels/matmul-sgm.js';
import { matmulSgmInputSpec } from '../kernels/matmul-sgm-input.js';
import { PROJECTIONS, projectionShape } from './checkpoint.js';
import type { Qwen3Config } from './config.js';
import { planBuffer, type PlanBuffer } from './buffer-plan.js';
import { attentionScaleLayout, attentionSgmForwardSpec, attentionSgmHeadDimProblem } from '../kernels/attention-sgm.js';

/**
 * Which matmuls the decoder layers' base projections run on (issue 11 item 5):
 * - 'f32': the tiled f32 WGSL matmuls (src/kernels/matmul.ts, matmul-backward.ts), the reference,
 *   and the only path on adapters without subgroup matrices (lavapipe, CI);
 * - 'tensor-cores': subgroup matrices with f16 operands and f32 accumulation (matmul-sgm.ts,
 *   matmul-sgm-input.ts), each operand's rows scaled into f16 range (row-scale.ts); so does the
 *   chunked loss head's lm_head, logits and dX (src/model/loss-head.ts, lossHeadPath), and the
 *   packed flash attention forward and backward (attention-sgm.ts, attention-sgm-backward.ts; head
 *   dims that are multiples of 32 up to 128, attentionSgmHeadDimProblem). The LoRA branch, norms,
 *   the softmax statistics and loss, generation's KV-cache attention and one-row lm_head and the
 *   optimiser stay f32.
 * `compute_dtype` in the config asks for one: auto (tensor cores where they can run), float32 or
 * float16 (tensor cores or an error saying why not).
 */
export type ComputePath = 'f32' | 'tensor-cores';
export type ComputeDtype = 'auto' | 'float32' | 'float16';

/** What the choice reads of an adapter (a Gpu has all of it; tests pass plain objects). */
export type AdapterCapabilities = SgmAdapter;

/** The most storage buffers one tensor-core kernel binds (the forward matmul's, with its vec4 LoRA views). */
export const TENSOR_CORE_STORAGE_BUFFERS = Math.max(
  ...[matmulSgmForwardSpec, matmulSgmInputSpec, attentionSgmForwardSpec, headScaleSpec].map(storageBufferCount),
  ATTENTION_SGM_BACKWARD_STORAGE_BUFFERS,
);

/** The K granularity of the subgroup-matrix kernels (one NF4 block) and the N granularity of their input gradient (vec4 rows of dY). */
const SGM_K_MULTIPLE = 64;
const SGM_N_MULTIPLE = 4;

/**
 * Why the tensor-core path cannot run on this adapter (and for this model, when given), or
 * undefined when it can: a missing feature, no f16→f32 16×16×16 subgroup-matrix config, fewer
 * storage buffers per shader stage than its kernels bind, or a projection whose input width is not
 * a multiple of 64 or output width not a multiple of 4.
 */
export function tensorCoreUnsupportedReason(adapter: AdapterCapabilities, model?: Qwen3Config): string | undefined {
  const problem = sgmUnsupportedReason(adapter, TENSOR_CORE_STORAGE_BUFFERS);
  if (problem) return problem;
  if (model) {
    for (const p of PROJECTIONS) {
      const [nOut, k] = projectionShape(model, p);
      if (k % SGM_K_MULTIPLE !== 0 || nOut % SGM_N_MULTIPLE !== 0) {
        return `the model's ${p} is (${nOut}, ${k}); the subgroup-matrix kernels need the input width a multiple of ${SGM_K_MULTIPLE} and the output width a multiple of ${SGM_N_MULTIPLE}`;
      }
    }
  }
  return undefined;
}

export interface ComputeChoice {
  readonly path: ComputePath;
  /** Why: "compute_dtype auto: …" in words, for the start block and the dry run. */
  readonly why: string;
}

/**
 * The path for `dtype` on `adapter` (and `model`): a pure function of the adapter's features and
 * subgroup-matrix configs, the model's projection shapes and the setting. `float16` where the
 * tensor cores cannot run is a DeviceError naming what is missing.
 */
export function chooseComputePath(adapter: AdapterCapabilities, dtype: ComputeDtype, model?: Qwen3Config): ComputeChoice {
  if (dtype === 'float32') return { path: 'f32', why: 'compute_dtype: float32' };
  const reason = tensorCoreUnsupportedReason(adapter, model);
  if (dtype === 'float16') {
    if (reason) throw new DeviceError(`compute_dtype: float16 needs tensor cores (subgroup matrices), but ${reason}; set compute_dtype: auto or float32 to train on the f32 path`);
    return { path: 'tensor-cores', why: 'compute_dtype: float16' };
  }
  return reason ? { path: 'f32', why: `compute_dtype: auto; no tensor cores: ${reason}` } : { path: 'tensor-cores', why: 'compute_dtype: auto; the adapter offers f16→f32 subgroup matrices' };
}

/** The path in words, for the plan's first line and the start block's compute path. */
export function describeComputePath(path: ComputePath): string {
  return path === 'tensor-cores' ? 'tensor cores (f16 subgroup matrices, f32 accumulation)' : 'f32';
}

/** Plan name of the tensor-core path's row-scale buffer (one per program, reused for every input). */
export const ROW_SCALE_BUFFER = 'row scale (N) f32: f16 scales of a tensor-core matmul input';

/** The row-scale buffer of a program of `rows` rows on `path` (none on the f32 path). */
export function rowScalePlan(path: ComputePath | undefined, rows: number): PlanBuffer[] {
  return path === 'tensor-cores' ? [planBuffer(ROW_SCALE_BUFFER, 'scratch', 'layer', [rows], 'f32')] : [];
}

/** Plan name of the tensor-core attention's head-scale buffer (one per program, reused by every layer). */
export const ATTENTION_SCALES_BUFFER = 'attention head scales f32: f16 scales of q, k, v, dO per batch row and KV group';

/**
 * Whether packed attention runs on subgroup matrices: the tensor-core path and a head dim its kernels
 * take (tests/gpu/attention-sgm.test.ts; bench/results/h200-2026-12-03-attention-sgm-fixed.md).
 */
export function attentionOnTensorCores(path: ComputePath | undefined, headDim: number): boolean {
  return path === 'tensor-cores' && attentionSgmHeadDimProblem(headDim) === undefined;
}

/** The head-scale buffer of a packed-attention program of B batch rows (none unless attentionOnTensorCores). */
export function attentionScalePlan(path: ComputePath | undefined, B: number, Hkv: number, headDim: number): PlanBuffer[] {
  if (!attentionOnTensorCores(path, headDim)) return [];
  return [planBuffer(ATTENTION_SCALES_BUFFER, 'scratch', 'step', [attentionScaleLayout(B, Hkv).length], 'f32')];
}
