import type { BatchExample } from '../data/batching.js';
import { ShapeError } from '../errors.js';

/**
 * The checks every micro-batch passes before it is uploaded (train step, eval forward): a bad
 * value is an error naming the example, never read out of bounds or clamped on the GPU.
 *
 *   input_ids     in [0, vocab)
 *   position_ids  in [0, maxPosition) — the rows of the RoPE table
 *   segment_ids   per batch row: start at 0 and never decrease nor skip (0, 0, 1, 1, 1, 2 …)
 */
/** What is uploaded: (B, T) i32 arrays, and where each example sits (to name it in an error). */
export interface UploadedInputs {
  readonly inputIds: Int32Array;
  readonly positionIds?: Int32Array;
  readonly segmentIds?: Int32Array;
  readonly examples?: readonly BatchExample[];
}

export interface InputLimits {
  readonly B: number;
  readonly T: number;
  readonly vocab: number;
  readonly maxPosition: number;
  /** Who uploads, for the message (e.g. "train step"). */
  readonly where: string;
}

export function checkBatchInputs(batch: UploadedInputs, limits: InputLimits): void {
  const { B, T, vocab, maxPosition, where } = limits;
  const fail = (b: number, t: number, what: string): never => {
    const e = batch.examples?.find((x) => x.row === b && t >= x.offset && t < x.offset + x.length);
    const who = e ? `example ${e.index + 1} (batch row ${b}, column ${t})` : `batch row ${b}, column ${t} (padding)`;
    throw new ShapeError(`${where}: ${who}: ${what}; the data or the tokenizer does not match the model — check that the dataset was tokenized for this model and max_seq_length`);
  };
  for (let b = 0; b < B; b++) {
    let segment = 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      const id = batch.inputIds[i];
      if (!(id >= 0 && id < vocab)) fail(b, t, `input_ids = ${id}, expected a token id in [0, ${vocab})`);
      if (batch.positionIds) {
        const p = batch.positionIds[i];
        if (!(p >= 0 && p < maxPosition)) fail(b, t, `position_ids = ${p}, past the RoPE table of ${maxPosition} positions (expected [0, ${maxPosition}))`);
      }
      if (batch.segmentIds) {
        const s = batch.segmentIds[i];
        const ok = t === 0 ? s === 0 : s === segment || s === segment + 1;
        if (!ok) fail(b, t, `segment_ids = ${s} after ${t === 0 ? 'the row start (expected 0)' : `${segment} (expected ${segment} or ${segment + 1})`}`);
        segment = s;
      }
    }
  }
}
