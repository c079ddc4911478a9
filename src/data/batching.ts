/**
 * Tokenized examples → batches in the layout the GPU forward consumes.
 *
 * Packing (best-fit decreasing): rows of T = max_seq_length tokens each hold several whole
 * examples; position ids restart at 0 for every example and each example gets its own segment id,
 * so attention (which must only join equal segment ids) cannot cross examples. The first token of
 * every example is never a target, so the last logit of one example is not trained to predict the
 * next example's first token: each example's loss is exactly what it is alone. Padding: one
 * example per row, padded to the longest in the batch (rounded up to a multiple of 8), with
 * `group_by_length` batching examples of similar length (as transformers' LengthGroupedSampler).
 * Padding tokens get their own segment and no targets.
 *
 * Order: the rows are fixed for the run; each epoch visits them in a permutation drawn from
 * (seed, epoch), so resuming at (epoch, batch) replays the same batches.
 */
import type { TokenizedExample } from './render.js';
import { STREAM, mixSeed, permutation } from './shuffle.js';
import type { Batch } from '../batch.js';
import { IGNORE_INDEX } from '../labels.js';

/** Where one example lies in a batch. */
export interface BatchExample {
  /** Index into the example list the plan was made from. */
  index: number;
  /** Batch row b and first column t0 of the example; it spans columns [t0, t0 + length). */
  row: number;
  offset: number;
  length: number;
  /** Targets of this example: columns t in [t0, t0 + length − 1) with labels[b, t+1] ≠ −100. */
  targets: number;
}

/** A Batch (src/batch.ts) as the batcher lays it out: every field present, with its shape and where each example lies. */
export interface PlacedBatch extends Required<Batch> {
  /** Rows and tokens per row: the arrays are (B, T) row-major; padding is padTokenId, label −100, a segment of its own. */
  B: number;
  T: number;
  examples: BatchExample[];
  /** Σ over the batch of positions with labels[b, t+1] ≠ −100: the loss's denominator. */
  targets: number;
}

export interface BatchPlanOptions {
  batchSize: number;
  maxSeqLength: number;
  packing: boolean;
  groupByLength: boolean;
  seed: number;
  padTokenId: number;
  /** Padding mode only: always T = maxSeqLength instead of the batch's longest example. */
  fixedLength?: boolean;
  /** Padding mode: T rounded up to a multiple of this (default 8), capped at maxSeqLength. */
  padToMultipleOf?: number;
}

/** Rows of example indices, fixed for the run, and how batches are drawn from them. */
export interface BatchPlan {
  rows: number[][];
  /** Tokens used per row (sum of its examples' lengths). */
  rowLengths: number[];
  batchesPerEpoch: number;
  options: Readonly<BatchPlanOptions>;
}

/**
 * Best-fit decreasing: examples by length, longest first (ties by index), each into the open
 * row with the least room that still fits it, else a new row.
 */
export function packBestFitDecreasing(lengths: readonly number[], capacity: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  const rows: number[][] = [];
  const room: number[] = [];
  for (const i of order) {
    const len = lengths[i];
    if (len > capacity) throw new RangeError(`packBestFitDecreasing: example ${i} has ${len} tokens, more than a row's ${capacity}`);
    let best = -1;
    for (let r = 0; r < rows.length; r++) if (room[r] >= len && (best < 0 || room[r] < room[best])) best = r;
    if (best < 0) {
      rows.push([i]);
      room.push(capacity - len);
    } else {
      rows[best].push(i);
      room[best] -= len;
    }
  }
  return rows;
}

export function planBatches(examples: readonly Pick<TokenizedExample, 'ids'>[], options: BatchPlanOptions): BatchPlan {
  const lengths = examples.map((e) => e.ids.length);
  const rows = options.packing ? packBestFitDecreasing(lengths, options.maxSeqLength) : lengths.map((_, i) => [i]);
  return {
    rows,
    rowLengths: rows.map((r) => r.reduce((s, i) => s + lengths[i], 0)),
    batchesPerEpoch: Math.ceil(rows.length / options.batchSize),
    options: { ...options },
  };
}

/** The row indices of each batch of `epoch`, in order. */
export function epochBatchRows(plan: BatchPlan, epoch: number): number[][] {
  const { batchSize, seed, groupByLength, packing } = plan.options;
  let order = permutation(plan.rows.length, mixSeed(seed, STREAM.epochOrder, epoch));
  if (groupByLength && !packing) order = groupByLengthOrder(order, plan.rowLengths, batchSize);
  const batches: number[][] = [];
  for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
  return batches;
}

/**
 * transformers' LengthGroupedSampler: megabatches of 50·B shuffled indices, each sorted longest
 * first; the megabatch holding the longest example goes first (so a memory overflow shows at once).
 */
function groupByLengthOrder(order: number[], lengths: readonly number[], batchSize: number): number[] {
  const mega = 50 * batchSize;
  const groups: number[][] = [];
  for (let i = 0; i < order.length; i += mega) groups.push(order.slice(i, i + mega).sort((a, b) => lengths[b] - lengths[a] || a - b));
  // Move the longest row to the very front.
  let gi = 0;
  for (let g = 0; g < groups.length; g++) if (lengths[groups[g][0]] > lengths[groups[gi][0]]) gi = g;
  [groups[0][0], groups[gi][0]] = [groups[gi][0], groups[0][0]];
  return groups.flat();
}

/** Lays out the rows `rowIds` of `plan` as one batch. */
export function buildBatch(examples: readonly Pick<TokenizedExample, 'ids' | 'loss'>[], plan: BatchPlan, rowIds: readonly number[]): PlacedBatch {
  const { packing, maxSeqLength, fixedLength, padTokenId } = plan.options;
  const B = rowIds.length;
  let T = maxSeqLength;
  if (!packing && !fixedLength) {
    const m = plan.options.padToMultipleOf ?? 8;
    const longest = Math.max(...rowIds.map((r) => plan.rowLengths[r]));
    T = Math.min(maxSeqLength, Math.ceil(longest / m) * m);
  }
  const inputIds = new Int32Array(B * T).fill(padTokenId);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const positionIds = new Int32Array(B * T);
  const segmentIds = new Int32Array(B * T);
  const placed: BatchExample[] = [];
  let targets = 0;
  rowIds.forEach((r, b) => {
    let t0 = 0;
    let seg = 0;
    for (const index of plan.rows[r]) {
      const ex = examples[index];
      const n = ex.ids.length;
      let exTargets = 0;
      for (let j = 0; j < n; j++) {
        const at = b * T + t0 + j;
        inputIds[at] = ex.ids[j];
        positionIds[at] = j;
        segmentIds[at] = seg;
        // j = 0 is never a target: nothing of this example comes before it.
        if (j > 0 && ex.loss[j] === 1) {
          labels[at] = ex.ids[j];
          exTargets++;
        }
      }
      placed.push({ index, row: b, offset: t0, length: n, targets: exTargets });
      targets += exTargets;
      t0 += n;
      seg++;
    }
    for (let j = 0; t0 + j < T; j++) {
      positionIds[b * T + t0 + j] = j;
      segmentIds[b * T + t0 + j] = seg;
    }
  });
  return { B, T, inputIds, labels, positionIds, segmentIds, examples: placed, targets };
}

/** The batches of `epoch` from batch `startBatch` on (a resumed run passes where it stopped). */
export function* iterateBatches(
  examples: readonly Pick<TokenizedExample, 'ids' | 'loss'>[],
  plan: BatchPlan,
  epoch: number,
  startBatch = 0,
): Generator<PlacedBatch> {
  const batches = epochBatchRows(plan, epoch);
  for (let i = startBatch; i < batches.length; i++) yield buildBatch(examples, plan, batches[i]);
}

/** Optimizer steps per epoch: batches / gradient_accumulation_steps, a final partial group counting as a step. */
export function stepsPerEpoch(plan: BatchPlan, gradientAccumulationSteps: number): number {
  return Math.ceil(plan.batchesPerEpoch / gradientAccumulationSteps);
}
