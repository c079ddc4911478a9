import type { TrainConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { resolveOptim } from './adamw8bit.js';

/**
 * Can a run with `current` continue from a checkpoint written with `saved` (its config.yaml)?
 *
 *   shape keys   the adapter's and optimiser state's shapes and meaning: a difference is a
 *                ConfigError naming the key (the saved tensors cannot be loaded into this run)
 *   data keys    what decides the batches and their order: the checkpoint's data position (epoch,
 *                micro-batch) means nothing under other values, so a difference is an error too
 *   free keys    where output goes and how often things are logged or saved: no remark
 *   the rest     (learning rate, schedule, epochs, evaluation …) may change: one warning each,
 *                the run continues with the new value
 */
const SHAPE_KEYS = ['model_id', 'lora_r', 'lora_alpha', 'use_rslora', 'lora_target_modules'] as const;

const DATA_KEYS = [
  'dataset_id',
  'dataset_revision',
  'dataset_text_field',
  'dataset_format',
  'instruction_format',
  'train_split',
  'eval_split',
  'test_size',
  'seed',
  'system_prompt',
  'user_prefix',
  'enable_thinking',
  'completion_only_loss',
  'max_seq_length',
  'packing',
  'group_by_length',
  'per_device_train_batch_size',
  'gradient_accumulation_steps',
] as const;

const FREE_KEYS = new Set([
  'output_dir',
  'overwrite_output_dir',
  'resume_from_checkpoint',
  'logging_steps',
  'save_strategy',
  'save_steps',
  'save_total_limit',
  'report_to',
  'run_name',
  'wandb_project',
  'push_to_hub',
  'hub_model_id',
  'preprocessing',
]);

/** Returns one warning per changed free-to-change key; throws on a shape, data or optimiser change. */
export function checkResumeConfig(saved: Readonly<Record<string, unknown>>, current: TrainConfig, where: string): string[] {
  const cur = current as unknown as Readonly<Record<string, unknown>>;
  const same = (k: string): boolean => JSON.stringify(normalise(saved[k])) === JSON.stringify(normalise(cur[k]));
  const show = (v: unknown): string => (v === undefined ? '(absent)' : JSON.stringify(v));
  for (const k of SHAPE_KEYS) {
    if (!same(k)) {
      throw new ConfigError(
        `resume from ${where}: ${k} is ${show(saved[k])} in the checkpoint but ${show(cur[k])} now; the saved adapter and optimiser state belong to the other value. ` +
          `Set ${k}: ${show(saved[k])} to continue, or start a new run without --resume.`,
      );
    }
  }
  for (const k of DATA_KEYS) {
    if (!same(k)) {
      throw new ConfigError(
        `resume from ${where}: ${k} is ${show(saved[k])} in the checkpoint but ${show(cur[k])} now; it decides the batches, so the saved data position (epoch, micro-batch) would point elsewhere. ` +
          `Set ${k}: ${show(saved[k])} to continue, or start a new run without --resume.`,
      );
    }
  }
  const savedOptim = typeof saved.optim === 'string' ? saved.optim : undefined;
  if (savedOptim === undefined || resolveOptim(savedOptim).kind !== resolveOptim(current.optim).kind) {
    throw new ConfigError(
      `resume from ${where}: optim is ${show(saved.optim)} in the checkpoint but "${current.optim}" now; the saved optimiser state has another layout (8-bit vs 32-bit). ` +
        `Set optim: ${show(saved.optim)} to continue.`,
    );
  }
  const checked = new Set<string>([...SHAPE_KEYS, ...DATA_KEYS]);
  const warnings: string[] = [];
  for (const k of Object.keys(cur)) {
    if (checked.has(k) || FREE_KEYS.has(k) || same(k)) continue;
    warnings.push(`resume: ${k} was ${show(saved[k])} in the checkpoint, now ${show(cur[k])}; the run continues with the new value`);
  }
  return warnings;
}

/** Sorted copies of lists of names (target modules in any order are the same adapter). */
function normalise(v: unknown): unknown {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return [...v].sort();
  return v;
}
