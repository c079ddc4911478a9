/**
 * The two runs of the loss-curve comparison (issue 11 item 7): a training config (the v7 config by
 * default) with the keys below changed, once with `compute_dtype: float32` (the f32 reference
 * path) and once with `compute_dtype: float16` (tensor cores: f16 subgroup matrices, f32
 * accumulation; src/model/compute-path.ts). Everything else (learning rate and schedule, warm-up,
 * weight decay, LoRA r / alpha / dropout / targets, batch, gradient accumulation, sequence length,
 * packing, length grouping, completion-only loss, NF4 + double quant, gradient checkpointing,
 * optimiser, seed, data and its eval split) is the config's own, identical in both runs.
 *
 * Each change and why, as the record prints it:
 *   model_id                 embedded:qwen3-tiny: the config's model (Qwen3-4B) cannot be downloaded on
 *                            the GPU host; the embedded model is made locally (src/model/embedded.ts)
 *   output_dir               one fresh folder per run under --out
 *   compute_dtype            float32 | float16: the one thing compared
 *   max_steps                --steps
 *   eval_strategy/eval_steps steps, every --eval-steps (default steps/5): v7 evaluates per epoch (54 steps
 *                            on the bundled data), three times in 200 steps
 *   save_strategy/save_steps steps, with eval_steps: load_best_model_at_end needs them equal
 *   early_stopping_patience  null: both runs evaluate at the same steps even when one would stop early
 *   sample_max_new_tokens    0, export_gguf null, export_modelfile false: no sample generations and no
 *                            export (time; they do not touch the training or the eval loss)
 */

export type CompareRunName = 'f32' | 'tensor-cores';

/** One changed key: its `--set` value (YAML) and the reason, for the record. */
export interface ChangedKey {
  readonly key: string;
  readonly value: string;
  readonly why: string;
}

export interface CompareSettings {
  /** Optimiser steps of each run. */
  readonly steps: number;
  readonly evalSteps: number;
  /** The config's seed, set explicitly in both runs. */
  readonly seed: number;
  /** The user's own `--set key=value` strings, applied to both runs after the changes here. */
  readonly extra: readonly string[];
}

export const EMBEDDED_MODEL = 'embedded:qwen3-tiny';

/** The evaluation cadence for `steps` steps when none is given: five evaluations, the last at the end. */
export function defaultEvalSteps(steps: number): number {
  return Math.max(1, Math.floor(steps / 5));
}

/** The keys both runs change, in the order they are passed (`--set key=value`). */
export function commonChanges(s: CompareSettings): ChangedKey[] {
  return [
    { key: 'model_id', value: EMBEDDED_MODEL, why: "the config's model cannot be downloaded on the GPU host; the project's own embedded model (src/model/embedded.ts) is made locally" },
    { key: 'max_steps', value: String(s.steps), why: '--steps' },
    { key: 'eval_strategy', value: 'steps', why: 'several evaluations within --steps (v7 evaluates once per epoch of 54 steps)' },
    { key: 'eval_steps', value: String(s.evalSteps), why: '--eval-steps (default: steps/5)' },
    { key: 'save_strategy', value: 'steps', why: 'load_best_model_at_end needs save_strategy equal to eval_strategy' },
    { key: 'save_steps', value: String(s.evalSteps), why: 'with eval_steps' },
    { key: 'early_stopping_patience', value: 'null', why: 'both runs evaluate at the same steps even when one would stop early' },
    { key: 'seed', value: String(s.seed), why: "the config's seed, pinned in both runs" },
    { key: 'sample_max_new_tokens', value: '0', why: 'no sample generations at evaluations (time; they do not touch training)' },
    { key: 'export_gguf', value: 'null', why: 'no export at the end (time; not part of the loss curve)' },
    { key: 'export_modelfile', value: 'false', why: 'with export_gguf' },
  ];
}

/**
 * compute_dtype of each run: float32 for the reference; float16 for the tensor-core run (a
 * DeviceError where the adapter has no subgroup matrices), or auto with `allowSamePath` (the smoke
 * test on adapters without tensor cores, where auto takes the f32 path).
 */
export function computeDtype(run: CompareRunName, allowSamePath: boolean): 'float32' | 'float16' | 'auto' {
  if (run === 'f32') return 'float32';
  return allowSamePath ? 'auto' : 'float16';
}

/** The `--set` strings of one run, the user's extras last. */
export function runOverrides(s: CompareSettings, run: CompareRunName, allowSamePath: boolean): string[] {
  return [...commonChanges(s).map((c) => `${c.key}=${c.value}`), `compute_dtype=${computeDtype(run, allowSamePath)}`, ...s.extra];
}

/** The training command's arguments (after `node train.js`) for one run. */
export function trainArgs(configPath: string, outputDir: string, s: CompareSettings, run: CompareRunName, allowSamePath: boolean): string[] {
  const sets = runOverrides(s, run, allowSamePath).flatMap((v) => ['--set', v]);
  return ['--config', configPath, '--output-dir', outputDir, ...sets];
}
