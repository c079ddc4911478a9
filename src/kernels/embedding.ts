import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';

/**
 * Embedding gather: x (N, D) f32 ← table[ids[n]], table (V, D) bf16x2 (embed_tokens.weight, also the
 * tied LM head). An id outside [0, V) writes a row of NaN and reads nothing: callers validate ids on
 * the CPU before upload, so a NaN loss points at a bug rather than training on the wrong token.
 */
export const EmbeddingParams = defineParams('EmbeddingParams', [
  ['tokens', 'u32'],
  ['hidden', 'u32'],
  ['vocab', 'u32'],
] as const);

export const embeddingForwardSpec: KernelSpec<typeof EmbeddingParams> = {
  file: 'embedding_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'x', access: 'read_write' },
    { name: 'table', access: 'read' },
    { name: 'ids', access: 'read' },
  ],
  params: EmbeddingParams,
};

/** One token row per workgroup of 256 (on an H100 256 beat 512 and 1024, and a row per workgroup beat a column pair per invocation). */
export const EMBEDDING_WORKGROUP = 256;

export interface EmbeddingForwardTensors {
  /** (N, D) f32 — output. */
  x: Tensor;
  /** (V, D) bf16x2 — the embedding table. */
  table: Tensor;
  /** (N) i32 — token ids, each in [0, V). */
  ids: Tensor;
}

export interface EmbeddingShape {
  /** N = B·T */
  tokens: number;
  /** D */
  hidden: number;
  /** V */
  vocab: number;
}

export class Embedding {
  private constructor(
    private readonly forwardKernel: Kernel<typeof EmbeddingParams>,
    private readonly gridWidth: number,
  ) {}

  /** `gridWidth`: most workgroups along x before the grid folds into y (default: the device limit, 65535). */
  static async create(gpu: Gpu, options: { gridWidth?: number } = {}): Promise<Embedding> {
    const kernel = await Kernel.create(gpu, embeddingForwardSpec, { WG: EMBEDDING_WORKGROUP });
    return new Embedding(kernel, options.gridWidth ?? gpu.limits.maxComputeWorkgroupsPerDimension);
  }

  /** x (N, D) f32 ← table[ids] with table (V, D) bf16x2 and ids (N) i32. */
  forward(label: string, t: EmbeddingForwardTensors, shape: EmbeddingShape): Dispatch {
    const { tokens, hidden, vocab } = shape;
    for (const [k, v] of Object.entries(shape)) {
      if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${label} (embeddingForward): ${k}=${v} must be a positive integer`);
    }
    expectTensor(`${label} (embeddingForward)`, t.x, [tokens, hidden], 'f32');
    expectTensor(`${label} (embeddingForward)`, t.table, [vocab, hidden], 'bf16x2');
    expectTensor(`${label} (embeddingForward)`, t.ids, [tokens], 'i32');
    if (t.x.buffer === t.table.buffer || t.x.buffer === t.ids.buffer) {
      throw new ShapeError(`${label} (embeddingForward): output ${t.x.label} shares a GPU buffer with an input; WebGPU forbids writing a buffer the same dispatch reads`);
    }
    return this.forwardKernel.bind(label, { x: t.x, table: t.table, ids: t.ids }, { tokens, hidden, vocab }, foldGrid(tokens, this.gridWidth));
  }
}

/**
 * `count` workgroups as a grid of at most `width` along x, as square as the rows allow so that few
 * spare workgroups run (the shader recovers g = wg.y·gx + wg.x and skips g ≥ count).
 */
function foldGrid(count: number, width: number): [number, number] {
  const y = Math.ceil(count / width);
  return [Math.ceil(count / y), y];
}

/**
 * float64 reference: table (V·D) values (the bf16 numbers), ids (N); an id outside [0, V) gives a
 * row of NaN, as the kernel does.
 */
export function embeddingForwardRef(table: ArrayLike<number>, ids: ArrayLike<number>, vocab: number, hidden: number): Float64Array {
  const x = new Float64Array(ids.length * hidden);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    for (let d = 0; d < hidden; d++) x[n * hidden + d] = id >= 0 && id < vocab ? table[id * hidden + d] : NaN;
  }
  return x;
}
