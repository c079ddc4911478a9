import { z } from 'zod';
import { CheckpointError } from '../errors.js';
import type { CheckpointRecord, EvalRecord, StepRecord } from './events.js';

/**
 * What trainer_state.json of a training checkpoint holds (the folder's layout is described in
 * checkpoint-writer.ts): the loop's position and history, and the Trainer's counters. Parsed with
 * a schema on resume, so a damaged or foreign file is a CheckpointError naming the field.
 */
export const CHECKPOINT_FORMAT = 'prompt-lora-trainer checkpoint 1';

export const CHECKPOINT_FILES = Object.freeze({
  adapterWeights: 'adapter_model.safetensors',
  adapterConfig: 'adapter_config.json',
  optimizer: 'optimizer.safetensors',
  state: 'trainer_state.json',
  config: 'config.yaml',
  bestParams: 'best_params.safetensors',
});

/** A complete checkpoint folder's name; temporary folders (`….tmp-<pid>`) never match. */
export const CHECKPOINT_DIR_PATTERN = /^checkpoint-(\d+)$/;

export function checkpointDirName(step: number): string {
  return `checkpoint-${step}`;
}

/** Where the data stream stands: micro-batch `nextMicroBatch` of `epoch` is the next to run. */
export interface DataPosition {
  readonly epoch: number;
  /** 0 … microBatchesPerEpoch; equal to it when the epoch's batches are done but its end (epoch eval/save) is not. */
  readonly nextMicroBatch: number;
  /** Micro-batches per epoch of the batch plan that wrote the checkpoint (a check on resume). */
  readonly microBatchesPerEpoch: number;
}

/** The training loop's part of a checkpoint. */
export interface LoopState {
  readonly globalStep: number;
  readonly totalSteps: number;
  /** Fractional epoch reached (1.5 = half-way through the second epoch). */
  readonly epoch: number;
  readonly data: DataPosition;
  /** Updates the LR schedule has given: the next update uses lrAt(schedulerStep). */
  readonly schedulerStep: number;
  /** Best evaluation so far (metric eval_loss, lower is better). */
  readonly best: { readonly step: number; readonly evalLoss: number } | null;
  /** Evaluations in a row without improvement (early stopping's count). */
  readonly badEvaluations: number;
  readonly evalHistory: readonly EvalRecord[];
  readonly logHistory: readonly StepRecord[];
  /** Training time so far (seconds), so a resumed run's elapsed time and ETA continue. */
  readonly elapsedSeconds: number;
}

/** The Trainer's counters (its tensors are in the adapter and optimizer files). */
export interface TrainerCounters {
  readonly optimizer: 'adamw' | 'adamw_8bit';
  readonly optimizerSteps: number;
  /** Micro-batches run so far: seeds the LoRA-dropout masks of the next one. */
  readonly microBatches: number;
  /** GradNormState words: totalNorm bits, clipCoef bits, nonFinite, skippedSteps. */
  readonly gradNorm: readonly number[];
  /** Loss summed since the last logged step and its target tokens (logging continues exactly). */
  readonly pendingLoss: { readonly sum: number; readonly targets: number };
}

export interface CheckpointState {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly reason: CheckpointRecord['reason'];
  /** ISO time of writing. */
  readonly savedAt: string;
  readonly loop: LoopState;
  readonly trainer: TrainerCounters;
  /** best_params.safetensors is present (the best evaluation was at another step). */
  readonly hasBestParams: boolean;
}

const count = z.number().int().min(0);
const record = z.record(z.string(), z.unknown());

const stateSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT),
  reason: z.enum(['save_steps', 'epoch', 'interrupt', 'final', 'best']),
  savedAt: z.string(),
  loop: z.object({
    globalStep: count,
    totalSteps: count,
    epoch: z.number().min(0),
    data: z.object({ epoch: count, nextMicroBatch: count, microBatchesPerEpoch: count }),
    schedulerStep: count,
    best: z.object({ step: count, evalLoss: z.number() }).nullable(),
    badEvaluations: count,
    evalHistory: z.array(record),
    logHistory: z.array(record),
    elapsedSeconds: z.number().min(0),
  }),
  trainer: z.object({
    optimizer: z.enum(['adamw', 'adamw_8bit']),
    optimizerSteps: count,
    microBatches: count,
    gradNorm: z.array(z.number().int().min(0).max(0xffffffff)).length(4),
    pendingLoss: z.object({ sum: z.number(), targets: count }),
  }),
  hasBestParams: z.boolean(),
});

/** Parses trainer_state.json text; `where` names the file in errors. */
export function parseCheckpointState(text: string, where: string): CheckpointState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${where}: not valid JSON (${(e as Error).message}); the checkpoint is damaged — resume from another one`, { cause: e });
  }
  const parsed = stateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CheckpointError(
      `${where}: ${issue.path.join('.') || '(top level)'}: ${issue.message}; expected a trainer_state.json of format "${CHECKPOINT_FORMAT}" — the checkpoint is damaged or was written by another program`,
    );
  }
  return parsed.data as unknown as CheckpointState;
}
