import type { PlacedBatch } from '../data/batching.js';
import { IGNORE_INDEX } from '../labels.js';
import { ShapeError } from '../errors.js';

/**
 * A batch widened to the fixed (B, T) of a pre-built GPU program: missing rows and columns are
 * padding (pad token, label −100, a segment of their own, positions counting from 0), so they are
 * never scored and never attended to by real tokens.
 */
export function padBatch(batch: PlacedBatch, B: number, T: number, padTokenId: number): PlacedBatch {
  if (batch.B > B || batch.T > T) throw new ShapeError(`padBatch: batch (${batch.B}, ${batch.T}) is larger than the program's (${B}, ${T})`);
  if (batch.B === B && batch.T === T) return batch;
  const inputIds = new Int32Array(B * T).fill(padTokenId);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  const positionIds = new Int32Array(B * T);
  const segmentIds = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    let lastSeg = -1;
    let padStart = 0;
    for (let t = 0; t < T; t++) {
      const i = b * T + t;
      if (b < batch.B && t < batch.T) {
        const j = b * batch.T + t;
        inputIds[i] = batch.inputIds[j];
        labels[i] = batch.labels[j];
        positionIds[i] = batch.positionIds[j];
        segmentIds[i] = batch.segmentIds[j];
        lastSeg = Math.max(lastSeg, batch.segmentIds[j]);
        padStart = t + 1;
      } else {
        segmentIds[i] = lastSeg + 1;
        positionIds[i] = t - padStart;
      }
    }
  }
  return { ...batch, B, T, inputIds, labels, positionIds, segmentIds };
}
