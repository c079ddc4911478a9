/**
 * How one evaluation is judged, as transformers does: the best is picked by the metric alone
 * (metric_for_best_model, here eval_loss, lower is better: Trainer._determine_best_metric), and
 * early_stopping_threshold only decides whether the patience counter is reset, comparing with the best
 * before this evaluation (EarlyStoppingCallback.check_metric_value).
 */
export interface EvaluationJudgement {
  /** The lowest eval_loss so far: this evaluation becomes the best checkpoint. */
  readonly isBest: boolean;
  /** Evaluations in a row that did not improve on the previous best by more than the threshold. */
  readonly badEvaluations: number;
}

export function judgeEvaluation(previousBest: number | undefined, evalLoss: number, threshold: number, badBefore: number): EvaluationJudgement {
  if (previousBest === undefined) return { isBest: true, badEvaluations: 0 };
  const isBest = evalLoss < previousBest;
  const improved = isBest && Math.abs(evalLoss - previousBest) > threshold;
  return { isBest, badEvaluations: improved ? 0 : badBefore + 1 };
}
