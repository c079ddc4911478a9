/**
 * The one batch type: what a program (evaluation forward, training step) takes for B rows of T
 * tokens, every array (B·T) i32 row-major. The batcher (src/data/batching.ts) fills every field and
 * adds where each example lies (`PlacedBatch`); evaluation and tests may leave out what defaults.
 */
export interface Batch {
  /** (B·T) token ids in [0, V) */
  readonly inputIds: Int32Array;
  /** (B·T) labels, IGNORE_INDEX (−100, src/labels.ts) = no loss; unshifted (position t+1's label is scored by position t's logits). */
  readonly labels?: Int32Array;
  /** (B·T) positions, restarting at 0 for each packed example; default 0..T−1 in every row. */
  readonly positionIds?: Int32Array;
  /** (B·T) example id of each token within its row; default 0 everywhere. */
  readonly segmentIds?: Int32Array;
}
