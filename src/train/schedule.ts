import { ConfigError } from '../errors.js';

/**
 * Learning-rate schedules, equal step by step to transformers' (optimization.py):
 *   constant              get_constant_schedule                      λ = 1 (no warmup: transformers'
 *                                                                    get_scheduler ignores warmup here)
 *   constant_with_warmup  get_constant_schedule_with_warmup          λ = s / max(1, W) for s < W, else 1
 *   linear                get_linear_schedule_with_warmup            λ = s / max(1, W) for s < W,
 *                                                                    else max(0, (T − s) / max(1, T − W))
 *   cosine                get_cosine_schedule_with_warmup            after warmup, with progress
 *                                                                    q = (s − W) / max(1, T − W):
 *                                                                    λ = max(0, ½(1 + cos(π·c·2·q))), c = 0.5
 *   cosine_with_min_lr    get_cosine_with_min_lr_schedule_with_warmup  λ = max(0, f·(1 − ρ) + ρ) with f the
 *                                                                    cosine factor and ρ = min_lr_rate
 *                                                                    (or min_lr / learning_rate)
 * where s is the step, W the warmup steps and T the total optimiser steps; lr = learning_rate · λ(s).
 *
 * Which s: transformers wraps these in torch's LambdaLR, which sets lr = base·λ(0) at construction
 * and advances by one after every optimiser step. So the k-th update (k = 1, 2, …) uses λ(k − 1):
 * the first update uses step 0's rate (0 with any warmup), and lrAt takes the number of optimiser
 * steps already taken. The warmup length is TrainingArguments.get_warmup_steps: warmup_steps when
 * ≥ 1, else ceil(T · ratio) with the ratio from warmup_steps in (0, 1) (transformers 5) or
 * warmup_ratio, in float64 as Python computes it (ceil(100 · 0.07) = 8).
 */
export const SCHEDULER_TYPES = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_min_lr'] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

export interface ScheduleConfig {
  readonly type: SchedulerType;
  /** learning_rate: the peak rate the factor multiplies. */
  readonly learningRate: number;
  /** num_training_steps: total optimiser steps (not micro-batches). */
  readonly totalSteps: number;
  /** warmup_steps: a count (≥ 1) that wins over warmupRatio, or a ratio in (0, 1) as transformers 5. */
  readonly warmupSteps?: number;
  /** warmup_ratio: a fraction of totalSteps, used when warmupSteps is 0 or absent. */
  readonly warmupRatio?: number;
  /** lr_scheduler_kwargs.num_cycles of the cosine schedules (default 0.5: one half-cosine). */
  readonly numCycles?: number;
  /** lr_scheduler_kwargs.min_lr (cosine_with_min_lr; exclusive with minLrRate). */
  readonly minLr?: number;
  /** lr_scheduler_kwargs.min_lr_rate (cosine_with_min_lr; exclusive with minLr). */
  readonly minLrRate?: number;
}

/** TrainingArguments.get_warmup_steps. */
export function warmupStepsFor(totalSteps: number, warmupSteps = 0, warmupRatio = 0): number {
  if (warmupSteps >= 1) {
    if (!Number.isInteger(warmupSteps)) throw new ConfigError(`warmup_steps = ${warmupSteps}: a count must be a whole number (or give a ratio in [0, 1))`);
    return warmupSteps;
  }
  if (warmupSteps < 0) throw new ConfigError(`warmup_steps = ${warmupSteps} must be ≥ 0`);
  const ratio = warmupSteps > 0 ? warmupSteps : warmupRatio;
  if (!(ratio >= 0 && ratio <= 1)) throw new ConfigError(`warmup_ratio = ${ratio} must be in [0, 1]`);
  return Math.ceil(totalSteps * ratio);
}

interface LambdaArgs {
  readonly warmup: number;
  readonly total: number;
  readonly numCycles: number;
  readonly minLrRate: number;
}

/** The schedule's factor λ(step) (transformers' lr_lambda for this type). */
export function lrLambda(type: SchedulerType, step: number, a: LambdaArgs): number {
  const { warmup: W, total: T } = a;
  switch (type) {
    case 'constant':
      return 1;
    case 'constant_with_warmup':
      return step < W ? step / Math.max(1, W) : 1;
    case 'linear':
      if (step < W) return step / Math.max(1, W);
      return Math.max(0, (T - step) / Math.max(1, T - W));
    case 'cosine':
    case 'cosine_with_min_lr': {
      if (step < W) return step / Math.max(1, W);
      const progress = (step - W) / Math.max(1, T - W);
      const factor = 0.5 * (1 + Math.cos(Math.PI * a.numCycles * 2 * progress));
      const rate = type === 'cosine' ? 0 : a.minLrRate;
      return Math.max(0, factor * (1 - rate) + rate);
    }
  }
}

/** A resolved schedule: lrAt(k) is the learning rate of the update after k optimiser steps. */
export class LrSchedule {
  readonly warmupSteps: number;
  private readonly args: LambdaArgs;

  constructor(readonly config: ScheduleConfig) {
    const c = config;
    if (!SCHEDULER_TYPES.includes(c.type)) throw new ConfigError(`lr_scheduler_type "${String(c.type)}" is not one of ${SCHEDULER_TYPES.join(', ')}`);
    if (!(c.learningRate >= 0) || !Number.isFinite(c.learningRate)) throw new ConfigError(`learning_rate = ${c.learningRate} must be a finite number ≥ 0`);
    if (!Number.isInteger(c.totalSteps) || c.totalSteps < 1) throw new ConfigError(`the schedule needs the total number of optimiser steps (≥ 1), got ${c.totalSteps}`);
    const numCycles = c.numCycles ?? 0.5;
    if (!(numCycles > 0)) throw new ConfigError(`lr_scheduler_kwargs.num_cycles = ${numCycles} must be > 0`);
    let minLrRate = 0;
    if (c.type === 'cosine_with_min_lr') {
      if (c.minLr !== undefined && c.minLrRate !== undefined) {
        throw new ConfigError('lr_scheduler_kwargs: give only one of min_lr and min_lr_rate for cosine_with_min_lr');
      }
      if (c.minLr !== undefined) {
        if (!(c.learningRate > 0)) throw new ConfigError('lr_scheduler_kwargs.min_lr needs learning_rate > 0 (min_lr_rate = min_lr / learning_rate)');
        minLrRate = c.minLr / c.learningRate;
      } else if (c.minLrRate !== undefined) {
        minLrRate = c.minLrRate;
      } else {
        throw new ConfigError('lr_scheduler_type cosine_with_min_lr needs lr_scheduler_kwargs.min_lr or lr_scheduler_kwargs.min_lr_rate');
      }
      if (!(minLrRate >= 0) || !Number.isFinite(minLrRate)) throw new ConfigError(`min_lr_rate = ${minLrRate} must be ≥ 0`);
    }
    // get_scheduler passes no warmup to the constant schedule.
    this.warmupSteps = c.type === 'constant' ? 0 : warmupStepsFor(c.totalSteps, c.warmupSteps ?? 0, c.warmupRatio ?? 0);
    this.args = { warmup: this.warmupSteps, total: c.totalSteps, numCycles, minLrRate };
  }

  /** λ after `stepsTaken` optimiser steps (0 for the first update). */
  factorAt(stepsTaken: number): number {
    if (!Number.isInteger(stepsTaken) || stepsTaken < 0) throw new ConfigError(`schedule step ${stepsTaken} must be an integer ≥ 0`);
    return lrLambda(this.config.type, stepsTaken, this.args);
  }

  /** learning_rate · λ(stepsTaken): the rate of update number stepsTaken + 1. */
  lrAt(stepsTaken: number): number {
    return this.config.learningRate * this.factorAt(stepsTaken);
  }
}
