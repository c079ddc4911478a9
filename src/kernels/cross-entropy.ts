import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { IGNORE_INDEX } from '../labels.js';

/**
 * Cross-entropy over a chunk of Tc rows of logits (Tc, V): loss = lse − logits[target] per row, 0
 * where the target is IGNORE_INDEX (−100), the row's log-sum-exp saved for the backward pass, and
 * correct = 1 where the row's argmax (lowest index among equal maxima, as torch.argmax) is the target
 * (token accuracy; 0 for ignored rows).
 * The caller computes logits a chunk at a time so (Tc·V) never all sits in memory, shifts the
 * targets (labels[t + 1]), sums the per-row losses (SumReduce with accumulate) and divides by the
 * count of valid targets. A target outside [0, V) other than −100 gives a NaN loss (reads nothing).
 * The backward pass overwrites the chunk's logits with dlogits = c·(softmax − one-hot) per valid row
 * (0 for ignored rows) from the saved lse; the hidden-state gradient dlogits·E is the caller's matmul.
 */

export const CrossEntropyParams = defineParams('CrossEntropyParams', [
  ['rows', 'u32'],
  ['vocab', 'u32'],
] as const);

export const crossEntropyForwardSpec: KernelSpec<typeof CrossEntropyParams> = {
  file: 'cross_entropy_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'loss', access: 'read_write' },
    { name: 'lse', access: 'read_write' },
    { name: 'correct', access: 'read_write' },
    { name: 'logits', access: 'read' },
    { name: 'targets', access: 'read' },
  ],
  params: CrossEntropyParams,
};

export const CrossEntropyBackwardParams = defineParams('CrossEntropyBackwardParams', [
  ['rows', 'u32'],
  ['vocab', 'u32'],
  ['scale', 'f32'],
] as const);

export const crossEntropyBackwardSpec: KernelSpec<typeof CrossEntropyBackwardParams> = {
  file: 'cross_entropy_backward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'logits', access: 'read_write' },
    { name: 'gradScale', access: 'read' },
    { name: 'targets', access: 'read' },
    { name: 'lse', access: 'read' },
  ],
  params: CrossEntropyBackwardParams,
};

/**
 * Backward: workgroups of 256, each over a slice of 16·256 = 4096 consecutive logits of one row, so a
 * chunk of Tc rows at V = 151936 runs 38·Tc workgroups (enough for an H100 even at small Tc).
 */
export const CROSS_ENTROPY_BACKWARD_WORKGROUP = 256;
export const CROSS_ENTROPY_BACKWARD_ELEMS = 16;

/**
 * One row per workgroup of 256, eight coalesced loads in flight per invocation: on an H100 at
 * V = 151936 this read 2.7 TB/s at Tc = 512 (eight beat four loads by 1.5× at Tc = 128).
 */
export const CROSS_ENTROPY_WORKGROUP = 256;

/** What the forward pass saves for backward. */
export interface CrossEntropySaved {
  /** (Tc) f32 — log Σ_v exp(logits[r, v]); the backward's softmax is exp(logits − lse). */
  lse: Tensor;
}

export interface CrossEntropyForwardTensors extends CrossEntropySaved {
  /** (Tc) f32 — per-row loss, 0 for ignored rows. */
  loss: Tensor;
  /** (Tc) f32 — 1 where argmax = target, else 0 (0 for ignored rows). */
  correct: Tensor;
  /** (Tc, V) f32 */
  logits: Tensor;
  /** (Tc) i32 — target ids, IGNORE_INDEX to skip a row. */
  targets: Tensor;
}

export interface CrossEntropyShape {
  /** Tc, rows of this chunk */
  rows: number;
  /** V */
  vocab: number;
}

export interface CrossEntropyBackwardTensors extends CrossEntropySaved {
  /** (Tc, V) f32 — the forward's logits; overwritten with dlogits (they are not needed after). */
  logits: Tensor;
  /**
   * (1) f32 — optional factor read on the GPU when the dispatch runs (incoming gradient of the summed
   * loss, e.g. 1 / target tokens of all micro-batches, written with gpu.write before each step or
   * computed by an earlier kernel). Without it the factor is 1 and only `scale` applies.
   */
  gradScale?: Tensor;
  /** (Tc) i32 — the forward's targets, IGNORE_INDEX for rows without a gradient. */
  targets: Tensor;
}

export interface CrossEntropyBackwardShape extends CrossEntropyShape {
  /** Constant factor fixed when the dispatch is bound; the gradient is scale · gradScale[0] · (softmax − one-hot). */
  scale: number;
}

export class CrossEntropy {
  private constructor(
    private readonly forwardKernel: Kernel<typeof CrossEntropyParams>,
    private readonly backwardKernel: Kernel<typeof CrossEntropyBackwardParams>,
    /** (1) f32 holding 1.0 — the gradScale of a backward given none. */
    private readonly one: Tensor,
    private readonly gridWidth: number,
  ) {}

  /** `gridWidth`: most workgroups along x (forward) / y (backward rows) before the grid folds (default: the device limit, 65535). */
  static async create(gpu: Gpu, options: { gridWidth?: number } = {}): Promise<CrossEntropy> {
    const [forward, backward] = await Promise.all([
      Kernel.create(gpu, crossEntropyForwardSpec, { WG: CROSS_ENTROPY_WORKGROUP }),
      Kernel.create(gpu, crossEntropyBackwardSpec, { WG: CROSS_ENTROPY_BACKWARD_WORKGROUP, ELEMS: CROSS_ENTROPY_BACKWARD_ELEMS }),
    ]);
    const one = gpu.tensorFrom('cross-entropy gradScale 1.0 (1) f32', [1], 'f32', Float32Array.of(1));
    return new CrossEntropy(forward, backward, one, options.gridWidth ?? gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  /** loss, lse, correct (Tc) f32 ← cross-entropy of logits (Tc, V) f32 against targets (Tc) i32. */
  forward(label: string, t: CrossEntropyForwardTensors, shape: CrossEntropyShape): Dispatch {
    const { rows, vocab } = shape;
    for (const [k, v] of Object.entries(shape)) {
      if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${label} (crossEntropyForward): ${k}=${v} must be a positive integer`);
    }
    const where = `${label} (crossEntropyForward)`;
    expectTensor(where, t.logits, [rows, vocab], 'f32');
    expectTensor(where, t.targets, [rows], 'i32');
    expectTensor(where, t.loss, [rows], 'f32');
    expectTensor(where, t.lse, [rows], 'f32');
    expectTensor(where, t.correct, [rows], 'f32');
    for (const out of [t.loss, t.lse, t.correct]) {
      if (out.buffer === t.logits.buffer || out.buffer === t.targets.buffer) {
        throw new ShapeError(`${where}: output ${out.label} shares a GPU buffer with an input; WebGPU forbids writing a buffer the same dispatch reads`);
      }
    }
    // rows as a grid of at most gridWidth along x, as square as the rows allow (few spare workgroups)
    const gy = Math.ceil(rows / this.gridWidth);
    return this.forwardKernel.bind(label, { loss: t.loss, lse: t.lse, correct: t.correct, logits: t.logits, targets: t.targets }, { rows, vocab }, [Math.ceil(rows / gy), gy]);
  }

  /**
   * logits (Tc, V) f32 ← dlogits = scale · gradScale[0] · (exp(logits − lse) − onehot(target)) per row
   * with a valid target, 0 for IGNORE_INDEX rows, NaN for other out-of-range targets; targets (Tc) i32,
   * lse (Tc) f32 as the forward saved it, gradScale (1) f32 optional.
   */
  backward(label: string, t: CrossEntropyBackwardTensors, shape: CrossEntropyBackwardShape): Dispatch {
    const { rows, vocab, scale } = shape;
    const where = `${label} (crossEntropyBackward)`;
    for (const [k, v] of Object.entries({ rows, vocab })) {
      if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${where}: ${k}=${v} must be a positive integer`);
    }
    if (!Number.isFinite(scale)) throw new ShapeError(`${where}: scale=${scale} must be a finite number`);
    const gradScale = t.gradScale ?? this.one;
    expectTensor(where, t.logits, [rows, vocab], 'f32');
    expectTensor(where, t.targets, [rows], 'i32');
    expectTensor(where, t.lse, [rows], 'f32');
    expectTensor(where, gradScale, [1], 'f32');
    for (const input of [gradScale, t.targets, t.lse]) {
      if (input.buffer === t.logits.buffer) {
        throw new ShapeError(
          `${where}: ${input.label} shares a GPU buffer with the logits, which are overwritten; WebGPU forbids writing a buffer ` +
            'that the same dispatch reads: give it its own buffer',
        );
      }
    }
    const slices = Math.ceil(vocab / (CROSS_ENTROPY_BACKWARD_WORKGROUP * CROSS_ENTROPY_BACKWARD_ELEMS));
    // rows along y, folded into z past gridWidth (as square as the rows allow)
    const gz = Math.ceil(rows / this.gridWidth);
    return this.backwardKernel.bind(
      label,
      { logits: t.logits, gradScale, targets: t.targets, lse: t.lse },
      { rows, vocab, scale },
      [slices, Math.ceil(rows / gz), gz],
    );
  }
}

/**
 * float64 reference: logits (rows·vocab), targets (rows). lse with the row max subtracted first;
 * loss = lse − logits[target], 0 for IGNORE_INDEX, NaN for any other target outside [0, vocab);
 * correct = 1 where the first index of the row's maximum is the target; argmax that index.
 */
export function crossEntropyForwardRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  rows: number,
  vocab: number,
): { loss: Float64Array; lse: Float64Array; correct: Float64Array; argmax: Int32Array } {
  const loss = new Float64Array(rows);
  const lse = new Float64Array(rows);
  const correct = new Float64Array(rows);
  const argmax = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let v = 0; v < vocab; v++) {
      if (logits[r * vocab + v] > m) {
        m = logits[r * vocab + v];
        argmax[r] = v;
      }
    }
    let s = 0;
    for (let v = 0; v < vocab; v++) s += Math.exp(logits[r * vocab + v] - m);
    lse[r] = m + Math.log(s);
    const t = targets[r];
    const valid = t >= 0 && t < vocab;
    loss[r] = t === IGNORE_INDEX ? 0 : valid ? lse[r] - logits[r * vocab + t] : NaN;
    correct[r] = valid && argmax[r] === t ? 1 : 0;
  }
  return { loss, lse, correct, argmax };
}

/**
 * float64 reference of the backward pass: logits (rows·vocab), targets (rows), the saved lse (rows)
 * and the total factor c; returns dlogits (rows·vocab) = c·(exp(logits − lse) − onehot(target)),
 * 0 rows for IGNORE_INDEX, NaN rows for any other target outside [0, vocab).
 */
export function crossEntropyBackwardRef(
  logits: ArrayLike<number>,
  targets: ArrayLike<number>,
  lse: ArrayLike<number>,
  rows: number,
  vocab: number,
  scale: number,
): Float64Array {
  const d = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const t = targets[r];
    const valid = t >= 0 && t < vocab;
    for (let v = 0; v < vocab; v++) {
      const i = r * vocab + v;
      d[i] = t === IGNORE_INDEX ? 0 : valid ? scale * (Math.exp(logits[i] - lse[r]) - (v === t ? 1 : 0)) : NaN;
    }
  }
  return d;
}
