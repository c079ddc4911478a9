import type { CheckpointRecord, EvalRecord, RunEnd, StepRecord } from '../train/events.js';
import { formatDuration, formatExp } from './format-units.js';

/**
 * One plain line per record of the training loop, as written to a log file or a pipe (and, on a
 * terminal, printed above the progress bar). The step line's layout is the one the issue names:
 *
 *   step 20/200 epoch 0.40: loss 1.2345, lr 1.98e-04, grad_norm 0.812, token_acc 0.61, 1234 tokens/s, eta 3m12s
 */

export function formatStepLine(r: StepRecord): string {
  const parts = [`loss ${r.loss.toFixed(4)}`, `lr ${formatExp(r.learningRate)}`, `grad_norm ${r.gradNorm.toFixed(3)}`];
  if (r.tokenAccuracy !== undefined) parts.push(`token_acc ${r.tokenAccuracy.toFixed(2)}`);
  parts.push(`${r.tokensPerSecond.toFixed(0)} tokens/s`, `eta ${formatDuration(r.etaSeconds)}`);
  return `step ${r.step}/${r.totalSteps} epoch ${r.epoch.toFixed(2)}: ${parts.join(', ')}`;
}

/** "step 40: eval_loss 1.2345, eval_token_acc 0.61 (best)" or "(best 1.2000 at step 20; 2 evaluations without improvement)". */
export function formatEvalLine(r: EvalRecord): string {
  let line = `step ${r.step}: eval_loss ${r.evalLoss.toFixed(4)}`;
  if (r.evalTokenAccuracy !== undefined) line += `, eval_token_acc ${r.evalTokenAccuracy.toFixed(2)}`;
  if (r.isBest) return `${line} (best)`;
  const bad = `${r.badEvaluations} evaluation${r.badEvaluations === 1 ? '' : 's'} without improvement`;
  return `${line} (best ${r.bestEvalLoss.toFixed(4)} at step ${r.bestStep}; ${bad})`;
}

export function formatCheckpointLine(r: CheckpointRecord): string {
  return `step ${r.step}: checkpoint saved to ${r.dir} (${r.reason})`;
}

/** The run's last line: how it ended, after how long, and the best evaluation when there was one. */
export function formatEndLine(r: RunEnd): string {
  const took = formatDuration(r.elapsedSeconds);
  const best = r.bestStep !== undefined && r.bestEvalLoss !== undefined ? `; best eval_loss ${r.bestEvalLoss.toFixed(4)} at step ${r.bestStep}` : '';
  switch (r.reason) {
    case 'completed':
      return `done: ${r.steps} steps in ${took}${best}`;
    case 'early_stopping':
      return `early stopping after ${r.steps} steps (${took})${best}`;
    case 'interrupted':
      return `interrupted at step ${r.steps} after ${took}${best}${r.message ? `: ${r.message}` : ''}${lastCheckpoint(r)}`;
    case 'failed':
      return `failed at step ${r.steps} after ${took}${r.message ? `: ${r.message}` : ''}${lastCheckpoint(r)}`;
  }
}

/** "; last checkpoint DIR" when there is one and the message does not already name it. */
function lastCheckpoint(r: RunEnd): string {
  return r.lastCheckpoint && !r.message?.includes(r.lastCheckpoint) ? `; last checkpoint ${r.lastCheckpoint}` : '';
}
