import { describe, expect, it } from 'vitest';
import { checkBatchInputs } from '../../src/model/input-checks.js';

/** Upload checks: token ids < vocab, positions < the RoPE table, consistent segment ids; errors name the example. */
const B = 2;
const T = 6;
const limits = { B, T, vocab: 50, maxPosition: 8, where: 'train step' };
function batch() {
  return {
    // row 0: example #3 (4 tokens) then padding; row 1: examples #1 (3) and #2 (3), packed
    inputIds: Int32Array.from([5, 6, 7, 8, 0, 0, 9, 10, 11, 12, 13, 14]),
    positionIds: Int32Array.from([0, 1, 2, 3, 0, 1, 0, 1, 2, 0, 1, 2]),
    segmentIds: Int32Array.from([0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1]),
    examples: [
      { index: 2, row: 0, offset: 0, length: 4, targets: 3 },
      { index: 0, row: 1, offset: 0, length: 3, targets: 2 },
      { index: 1, row: 1, offset: 3, length: 3, targets: 2 },
    ],
  };
}

describe('checkBatchInputs', () => {
  it('accepts a packed batch with padding', () => {
    expect(() => checkBatchInputs(batch(), limits)).not.toThrow();
  });

  it('a token id outside the vocabulary names the example', () => {
    for (const bad of [50, 1000, -1]) {
      const x = batch();
      x.inputIds[10] = bad;
      expect(() => checkBatchInputs(x, limits)).toThrow(new RegExp(`train step: example 2 \\(batch row 1, column 4\\): input_ids = ${bad}, expected a token id in \\[0, 50\\)`));
    }
  });

  it('a position past the RoPE table is an error naming the example, not a clamp', () => {
    for (const bad of [8, 1000, -3]) {
      const x = batch();
      x.positionIds[2] = bad;
      expect(() => checkBatchInputs(x, limits)).toThrow(new RegExp(`example 3 \\(batch row 0, column 2\\): position_ids = ${bad}, past the RoPE table of 8 positions`));
    }
    const pad = batch();
    pad.positionIds[5] = 9;
    expect(() => checkBatchInputs(pad, limits)).toThrow(/batch row 0, column 5 \(padding\): position_ids = 9/);
  });

  it('segment ids must start at 0 and step by 0 or 1 in each row', () => {
    const skip = batch();
    skip.segmentIds.set([2, 2, 2], 9);
    expect(() => checkBatchInputs(skip, limits)).toThrow(/example 2 \(batch row 1, column 3\): segment_ids = 2 after 0 \(expected 0 or 1\)/);
    const back = batch();
    back.segmentIds[11] = 0;
    expect(() => checkBatchInputs(back, limits)).toThrow(/column 5\): segment_ids = 0 after 1/);
    const start = batch();
    start.segmentIds[6] = 1;
    expect(() => checkBatchInputs(start, limits)).toThrow(/batch row 1, column 0\): segment_ids = 1 after the row start \(expected 0\)/);
  });
});
