import { describe, expect, it } from 'vitest';
import { judgeEvaluation } from '../../src/train/best-metric.js';

/** The best checkpoint as transformers picks it; the threshold only feeds early stopping's patience. */
describe('judgeEvaluation', () => {
  it("the issue's repro: threshold 1000, eval_loss 13.33 at step 2 then 13.02 at step 4 → step 4 is the best, one bad evaluation", () => {
    const first = judgeEvaluation(undefined, 13.33, 1000, 0);
    expect(first).toEqual({ isBest: true, badEvaluations: 0 });
    const second = judgeEvaluation(13.33, 13.02, 1000, first.badEvaluations);
    expect(second).toEqual({ isBest: true, badEvaluations: 1 });
  });

  it('an improvement above the threshold resets the counter; a worse or equal loss is neither best nor an improvement', () => {
    expect(judgeEvaluation(2.0, 1.5, 0.1, 3)).toEqual({ isBest: true, badEvaluations: 0 });
    expect(judgeEvaluation(2.0, 2.0, 0, 3)).toEqual({ isBest: false, badEvaluations: 4 });
    expect(judgeEvaluation(2.0, 2.5, 0, 0)).toEqual({ isBest: false, badEvaluations: 1 });
    // threshold 0 (the default): any strict improvement resets the counter, as EarlyStoppingCallback
    expect(judgeEvaluation(2.0, 1.999, 0, 2)).toEqual({ isBest: true, badEvaluations: 0 });
  });
});
