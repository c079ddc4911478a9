import { describe, expect, it } from 'vitest';
import { ShapeError } from '../../src/errors.js';
import { expectPositiveIntegers } from '../../src/kernels/tensor.js';

describe('expectPositiveIntegers', () => {
  it('passes positive integers and refuses 0, negatives, fractions, NaN and Infinity, naming the kernel and the size', () => {
    expect(() => expectPositiveIntegers('attn', { B: 1, T: 7, H: 32 })).not.toThrow();
    expect(() => expectPositiveIntegers('attn', {})).not.toThrow();
    for (const bad of [0, -3, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => expectPositiveIntegers('layer 3 attn', { B: 2, T: bad })).toThrow(ShapeError);
      expect(() => expectPositiveIntegers('layer 3 attn', { B: 2, T: bad })).toThrow(`layer 3 attn: T must be a positive integer, got ${bad}`);
    }
  });
});
