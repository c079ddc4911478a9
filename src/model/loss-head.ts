import { ConfigError, DeviceLimitError, ShapeError } from '../errors.js';
import type { CrossEntropy } from '../kernels/cross-entropy.js';
import { compactTargets, fusedSlices, fusedWeightUnsupported, FUSED_PARTIAL_WORDS, type CrossEntropyFused } from '../kernels/cross-entropy-fused.js';
import type { Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import type { LinearWeight, Matmul } from '../kernels/matmul.js';
import type { MatmulBackward } from '../kernels/matmul-backward.js';
import type { SumReduce } from '../kernels/reduce.js';
import { tensorView, type DType, type Tensor } from '../kernels/tensor.js';
import { NF4_BLOCK } from '../kernels/nf4.js';
import { planBuffer, type PlanAllocation, type PlanBuffer } from './buffer-plan.js';
import type { ComputePath } from './compute-path.js';
import { tensorCoresHaveHead, type TensorCoreKernels } from './tensor-core-kernels.js';

/**
 * The model's head over N positions: logits = xf · Eᵀ, the cross-entropy of each position against its
 * (shifted) target, Σ loss, Σ "argmax = target" (token accuracy), and for training dxf, the gradient
 * of Σ loss with respect to xf. Built once per program (ForwardProgram, TrainStep); two ways:
 *   chunked: Tc positions at a time, the (Tc, V) logits in one buffer: lm_head matmul → cross-entropy
 *            forward (→ backward in place → dX = dlogits · E). Every position is computed. GPUs.
 *   fused:   crossEntropyFused: only positions with a target, logits never stored (CPU adapters,
 *            where storing and re-reading 151,936 logits per position is what costs; see
 *            src/kernels/cross-entropy-fused.ts).
 * On the tensor-core path (the kernels carry `tensorCores`, src/model/compute-path.ts) the chunked
 * head's two matmuls run on subgroup matrices (`LossHeadChoice.matmul`, lossHeadPath): logits =
 * xf·Eᵀ on MatmulSgm with the row scales of xf (one row-scale dispatch over all N rows), dxf =
 * dlogits·E on MatmulSgmInput with the row scales of each chunk's dlogits (one dispatch after the
 * cross-entropy backward wrote them); E (the bf16 embedding when tied) is staged as f16 (exact), xf
 * and dlogits as f16 of their scaled rows; the softmax, loss, argmax and dlogits stay f32.
 * `auto` picks fused where the adapter and the lm_head allow it, except on the tensor-core path
 * (chooseLossHead says why).
 */
export type LossHeadMode = 'chunked' | 'fused';

export interface LossHeadKernels {
  readonly matmul: Matmul;
  readonly crossEntropy: CrossEntropy;
  readonly crossEntropyFused?: CrossEntropyFused;
  readonly sum: SumReduce;
  /** Needed for the chunked backward. */
  readonly matmulBackward?: MatmulBackward;
  /** The tensor-core path's kernels: the chunked head's lm_head runs on them (lossHeadPath). */
  readonly tensorCores?: TensorCoreKernels;
}

export interface LossHeadShape {
  /** Positions (B·T). */
  readonly N: number;
  /** Also compute dxf (training). */
  readonly backward: boolean;
  /** Default 'auto': fused where possible. */
  readonly mode?: LossHeadMode | 'auto';
  /** Positions per logits chunk of the chunked head (default: chooseLossChunk). */
  readonly lossChunkTokens?: number;
}

/**
 * Why the chunked head's lm_head (V, D) cannot run on subgroup matrices, or undefined when it can:
 * the forward reduces over D in NF4-block steps (a multiple of 64), the input gradient reads the
 * dlogits rows of V as vec4 (a multiple of 4). Qwen3's 2560 and 4096 by 151,936 fit.
 */
export function lossHeadTensorCoreUnsupported(V: number, D: number): string | undefined {
  if (D % NF4_BLOCK !== 0 || V % 4 !== 0) return `the lm_head is (${V}, ${D}); the subgroup-matrix kernels need D a multiple of ${NF4_BLOCK} and V a multiple of 4`;
  return undefined;
}

/**
 * Where the head's lm_head matmuls run: on tensor cores where the program's projections do
 * (`compute`), the head is chunked and the lm_head's shape fits (lossHeadTensorCoreUnsupported);
 * else f32. A function of the settings only, so the memory plans (planForward, planMicroBatch)
 * and the programs (chooseLossHeadFor) agree; the fused head always does its own f32 matmul.
 */
export function lossHeadPath(compute: ComputePath | undefined, mode: LossHeadMode, V: number, D: number): ComputePath {
  return compute === 'tensor-cores' && mode === 'chunked' && lossHeadTensorCoreUnsupported(V, D) === undefined ? 'tensor-cores' : 'f32';
}

/**
 * Which head a program gets: fused where the kernels were compiled (CPU adapter) and the lm_head
 * fits it, except on the tensor-core path: there `auto` takes the chunked head whenever its lm_head
 * can run on subgroup matrices. The fused kernels compute the logits themselves, one f32 dot product
 * of D per lane with x in registers (D ≤ 64), and cannot use subgroup matrices; the chunked head
 * does the same 2·N·V·D multiply-adds (4·N·V·D with the backward) on tensor cores at tens of
 * TFLOP/s and adds only the (Tc, V) logits' f32 traffic, which is what the fused head saves and
 * what costs on llvmpipe alone (cross-entropy-fused.ts). So on tensor cores the chunked head is the
 * faster by construction. (No adapter offers both today: the fused kernels are compiled for CPU
 * adapters, which have no subgroup matrices.) `fused` asked for explicitly stays fused, in f32.
 */
export function chooseLossHead(k: LossHeadKernels, lmHead: LinearWeight, requested: LossHeadMode | 'auto' = 'auto'): LossHeadMode {
  const unfit = k.crossEntropyFused ? fusedWeightUnsupported(lmHead) : 'the fused kernels were not compiled for this adapter';
  if (requested === 'fused' && unfit) throw new ConfigError(`loss head: fused requested but ${unfit}`);
  if (requested !== 'auto') return requested;
  if (k.tensorCores && lossHeadTensorCoreUnsupported(lmHead.nOut, lmHead.k) === undefined) return 'chunked';
  return unfit ? 'chunked' : 'fused';
}

/** Tokens per logits chunk: a multiple of 64 (aligned views) whose (Tc, V) f32 fits one binding. */
export function chooseLossChunk(gpu: Gpu, N: number, V: number, requested?: number): number {
  const fit = Math.floor(gpu.limits.maxStorageBufferBindingSize / (V * 4) / 64) * 64;
  if (fit < 64) {
    throw new DeviceLimitError(`forward: 64 tokens of logits (64 × ${V} f32) exceed this device's maxStorageBufferBindingSize of ${gpu.limits.maxStorageBufferBindingSize}`);
  }
  if (requested !== undefined) {
    if (requested % 64 !== 0 || requested < 64) throw new ConfigError(`forward: lossChunkTokens ${requested} must be a positive multiple of 64`);
    if (requested > fit) throw new DeviceLimitError(`forward: lossChunkTokens ${requested} × ${V} logits exceed one binding; at most ${fit}`);
    return requested;
  }
  return Math.min(fit, 1024, Math.ceil(N / 64) * 64);
}

/** The head's implementation and logits chunk as a program gets them (`auto` and the default chunk resolved). */
export interface LossHeadChoice {
  readonly mode: LossHeadMode;
  /** Positions per logits chunk (chunked mode; the chunk the plan assumes either way). */
  readonly chunkTokens: number;
  /** Where the chunked head's lm_head matmuls run (lossHeadPath; 'f32' for the fused head). */
  readonly matmul: ComputePath;
}

/**
 * Resolves `shape.mode` and `shape.lossChunkTokens` on this device (chooseLossHead, chooseLossChunk)
 * and the lm_head's path (lossHeadPath: tensor cores where `k` has them). A ConfigError where the
 * tensor-core kernels lack the lm_head's format (or, for the backward, the input gradient).
 */
export function chooseLossHeadFor(gpu: Gpu, k: LossHeadKernels, lmHead: LinearWeight, shape: LossHeadShape): LossHeadChoice {
  const mode = chooseLossHead(k, lmHead, shape.mode);
  const matmul = lossHeadPath(k.tensorCores ? 'tensor-cores' : 'f32', mode, lmHead.nOut, lmHead.k);
  if (matmul === 'tensor-cores' && !tensorCoresHaveHead(k.tensorCores!, lmHead.format, shape.backward)) {
    throw new ConfigError(
      `loss head: the tensor-core kernels lack the lm_head's ${lmHead.format} variants${shape.backward ? ' or the input gradient' : ''}; ` +
        'compile them with createTensorCoreKernels({ headFormats }) (default bf16) and createTrainKernels, or build the program on the f32 path',
    );
  }
  return { mode, chunkTokens: chooseLossChunk(gpu, shape.N, lmHead.nOut, shape.lossChunkTokens), matmul };
}

/** Names of the head's plan entries (lossHeadPlan lists them, LossHead.build takes them). */
export const HEAD_BUFFERS = {
  targets: 'targets (N) i32 — shifted labels',
  tokenLoss: 'token loss (N) f32',
  tokenLse: 'token lse (N) f32',
  correct: 'token correct (N) f32',
  lossSum: 'loss sum (1) f32',
  correctSum: 'correct sum (1) f32',
  rowPos: 'head row positions (N) i32',
  rowOf: 'head row of position (N) i32',
  rows: 'head rows (1) u32',
  partial: 'head partial (S, N, 4) f32',
  dxPartial: 'head dx partial (S, N, D) f32',
  logits: 'logits chunk (Tc, V) f32',
  xRowScale: 'head xf row scale (N) f32: f16 scales of the lm_head input (tensor cores)',
  gradRowScale: 'head dlogits row scale (Tc) f32: f16 scales of the lm_head input gradient (tensor cores)',
} as const;

/**
 * The head's buffers over N positions of a (V, D) lm_head: scratch rewritten every step. The
 * lm_head on tensor cores adds the row scales of xf (N) and, with the backward, of a chunk's dlogits (Tc).
 */
export function lossHeadPlan(N: number, V: number, D: number, choice: LossHeadChoice, backward: boolean): PlanBuffer[] {
  const b = (name: string, shape: number[], dtype: DType): PlanBuffer => planBuffer(name, 'scratch', 'step', shape, dtype);
  const H = HEAD_BUFFERS;
  const out = [b(H.targets, [N], 'i32'), b(H.tokenLoss, [N], 'f32'), b(H.tokenLse, [N], 'f32'), b(H.correct, [N], 'f32'), b(H.lossSum, [1], 'f32'), b(H.correctSum, [1], 'f32')];
  if (choice.mode === 'fused') {
    const S = fusedSlices(V);
    out.push(b(H.rowPos, [N], 'i32'), b(H.rowOf, [N], 'i32'), b(H.rows, [1], 'u32'), b(H.partial, [S, N, FUSED_PARTIAL_WORDS], 'f32'));
    if (backward) out.push(b(H.dxPartial, [S, N, D], 'f32'));
  } else {
    out.push(b(H.logits, [choice.chunkTokens, V], 'f32'));
    if (choice.matmul === 'tensor-cores') {
      out.push(b(H.xRowScale, [N], 'f32'));
      if (backward) out.push(b(H.gradRowScale, [choice.chunkTokens], 'f32'));
    }
  }
  return out;
}

export class LossHead {
  private constructor(
    private readonly gpu: Gpu,
    readonly mode: LossHeadMode,
    /** Positions per logits chunk (chunked mode; the chunk the plan assumes either way). */
    readonly chunkTokens: number,
    /** Where the lm_head matmuls run (LossHeadChoice.matmul). */
    readonly matmul: ComputePath,
    /** The vocabulary size (the logits per token). */
    readonly V: number,
    /** (N) i32 — shifted targets by position, IGNORE_INDEX where none. */
    readonly targets: Tensor,
    /** (N) f32 — each position's loss (0 without a target). */
    readonly tokenLoss: Tensor,
    /** (1) f32 — Σ tokenLoss. */
    readonly lossSum: Tensor,
    /** (N) f32 — 1 where argmax = target. */
    readonly correct: Tensor,
    /** (1) f32 — Σ correct: the positions predicted right. */
    readonly correctSum: Tensor,
    /** Fused mode: the compact-row lists uploaded with the targets. */
    private readonly rows: { rowPos: Tensor; rowOf: Tensor; count: Tensor } | undefined,
    /** The head's dispatches in order (forward, backward when asked, the two sums). */
    readonly dispatches: readonly Dispatch[],
  ) {}

  /**
   * Builds the head reading xf (N, D) f32 and, with `backward`, writing dxf (N, D) f32 (overwritten:
   * zero rows for positions without a target). `lmHead` is the tied (V, D) embedding. Its buffers
   * are the program's, allocated from `lossHeadPlan` (names HEAD_BUFFERS) with `choice`.
   */
  static build(gpu: Gpu, k: LossHeadKernels, lmHead: LinearWeight, xf: Tensor, dxf: Tensor | undefined, shape: { readonly N: number; readonly backward: boolean }, choice: LossHeadChoice, bufs: PlanAllocation): LossHead {
    const { N, backward } = shape;
    const D = lmHead.k;
    const V = lmHead.nOut;
    if (xf.shape[0] !== N || xf.shape[1] !== D) throw new ShapeError(`loss head: xf is [${xf.shape.join(', ')}], expected (N, D) = (${N}, ${D})`);
    if (backward && (!dxf || dxf.shape[0] !== N || dxf.shape[1] !== D)) throw new ShapeError(`loss head: backward needs dxf of (N, D) = (${N}, ${D})`);
    const { mode, chunkTokens: chunk, matmul } = choice;
    const H = HEAD_BUFFERS;
    const targets = bufs.one(H.targets);
    const tokenLoss = bufs.one(H.tokenLoss);
    const tokenLse = bufs.one(H.tokenLse);
    const correct = bufs.one(H.correct);
    const lossSum = bufs.one(H.lossSum);
    const correctSum = bufs.one(H.correctSum);
    const list: Dispatch[] = [];
    let rows: { rowPos: Tensor; rowOf: Tensor; count: Tensor } | undefined;

    if (mode === 'fused') {
      const fused = k.crossEntropyFused!;
      const slices = fusedSlices(V);
      const fs = { rows: N, vocab: V, hidden: D, slices };
      rows = { rowPos: bufs.one(H.rowPos), rowOf: bufs.one(H.rowOf), count: bufs.one(H.rows) };
      const lists = { targets, ...rows };
      const partial = bufs.one(H.partial);
      list.push(fused.forward('lm_head + cross-entropy (fused)', { partial, x: xf, w: lmHead, ...lists }, fs));
      list.push(fused.merge('cross-entropy merge (fused)', { loss: tokenLoss, lse: tokenLse, correct, partial, targets, rowOf: rows.rowOf }, fs));
      if (backward) {
        const dxPartial = bufs.one(H.dxPartial);
        list.push(fused.backward('lm_head + cross-entropy backward (fused)', { dxPartial, x: xf, w: lmHead, lse: tokenLse, ...lists }, { ...fs, scale: 1 }));
        list.push(fused.dx('lm_head backward slices → dxf (fused)', { dx: dxf!, dxPartial, rowOf: rows.rowOf }, fs));
      }
    } else {
      if (backward && !k.matmulBackward) throw new ShapeError('loss head: the chunked backward needs the matmul backward kernels');
      const logits = bufs.one(H.logits);
      // tensor cores: the row scales of xf, all N rows in one dispatch; of each chunk's dlogits below
      const tc = matmul === 'tensor-cores' ? k.tensorCores : undefined;
      if (matmul === 'tensor-cores' && (!tc || (backward && !tc.input))) throw new ShapeError('loss head: the lm_head on tensor cores needs the tensor-core kernels (with the input gradient for the backward)');
      const xScale = tc ? bufs.one(H.xRowScale) : undefined;
      const gradScale = tc && backward ? bufs.one(H.gradRowScale) : undefined;
      if (tc) list.push(tc.rowScale.forward('lm_head xf row scale', { rowScale: xScale!, x: xf }, D));
      for (let start = 0; start < N; start += chunk) {
        const n = Math.min(chunk, N - start);
        const rowsOf = (x: Tensor, name: string): Tensor => tensorView(x.buffer, `${name} rows ${start}..`, [n, D], 'f32', x.offset + start * D * 4);
        const at = (x: Tensor, dtype: DType): Tensor => tensorView(x.buffer, `${x.label} [${start}..]`, [n], dtype, x.offset + start * 4);
        const lg = tensorView(logits.buffer, 'logits chunk', [n, V], 'f32');
        const label = `lm_head rows ${start}..`;
        if (tc) list.push(tc.matmul.forward(label, { y: lg, x: rowsOf(xf, 'xf'), w: lmHead, rowScale: at(xScale!, 'f32') }));
        else list.push(k.matmul.forward(label, { y: lg, x: rowsOf(xf, 'xf'), w: lmHead }));
        list.push(k.crossEntropy.forward(`cross-entropy rows ${start}..`, { loss: at(tokenLoss, 'f32'), lse: at(tokenLse, 'f32'), correct: at(correct, 'f32'), logits: lg, targets: at(targets, 'i32') }, { rows: n, vocab: V }));
        if (backward) {
          list.push(k.crossEntropy.backward(`cross-entropy backward rows ${start}..`, { logits: lg, lse: at(tokenLse, 'f32'), targets: at(targets, 'i32') }, { rows: n, vocab: V, scale: 1 }));
          const back = `lm_head backward rows ${start}..`;
          if (tc) {
            const rs = tensorView(gradScale!.buffer, 'dlogits row scale', [n], 'f32', gradScale!.offset);
            list.push(tc.rowScale.forward(`${back} dlogits row scale`, { rowScale: rs, x: lg }, V));
            list.push(...tc.input!.input(back, { dx: rowsOf(dxf!, 'dxf'), dy: lg, rowScale: rs, w: lmHead }));
          } else {
            list.push(...k.matmulBackward!.inputSplit(back, { dx: rowsOf(dxf!, 'dxf'), dy: lg, w: lmHead }));
          }
        }
      }
    }
    list.push(k.sum.forward('loss sum', { out: lossSum, values: tokenLoss }, { n: N, accumulate: false }));
    list.push(k.sum.forward('correct sum', { out: correctSum, values: correct }, { n: N, accumulate: false }));
    return new LossHead(gpu, mode, chunk, matmul, V, targets, tokenLoss, lossSum, correct, correctSum, rows, list);
  }

  /**
   * Uploads the batch's shifted targets (N) (and, fused, the list of positions that have one);
   * returns how many positions have a target. A target outside [0, V) other than −100 is a ShapeError.
   */
  setTargets(targets: Int32Array, where: string): number {
    const lists = compactTargets(targets, this.V, where);
    this.gpu.write(this.targets, targets);
    if (this.rows) {
      this.gpu.write(this.rows.rowPos, lists.rowPos);
      this.gpu.write(this.rows.rowOf, lists.rowOf);
      this.gpu.write(this.rows.count, Uint32Array.of(lists.count));
    }
    return lists.count;
  }

  /** Σ loss and Σ correct of the last run (readbacks: call at logging or evaluation only). */
  async readSums(): Promise<{ loss: number; correct: number }> {
    const [loss, correct] = await Promise.all([this.gpu.readF32(this.lossSum), this.gpu.readF32(this.correctSum)]);
    return { loss: loss[0], correct: correct[0] };
  }
}

