/**
 * The recompute policy a run trained with, as run.json records it (src/run/run-folder.ts): the
 * config's `gradient_checkpointing`, how many leading layers were recomputed of how many, why
 * (autoRecompute's words, null for a fixed setting) and the device the choice was made on. A resumed
 * `auto` run reads it back so that it keeps the policy it started with (resumedAutoRecompute).
 */
import type { TrainConfig } from '../config/schema.js';
import type { StepSettings } from './plan.js';
import { checkpointedLayers, type RecomputePolicy } from './recompute.js';

export interface RecordedRecompute {
  /** The config's gradient_checkpointing (true, false, auto, k or {checkpoint_layers: k}). */
  readonly setting: TrainConfig['gradient_checkpointing'];
  /** Layers 0..checkpoint_layers−1 were recomputed. */
  readonly checkpoint_layers: number;
  /** The model's layers (L). */
  readonly layers: number;
  /** Why auto chose it; null for a fixed setting. */
  readonly why: string | null;
  /** The adapter the plan was made on (Gpu.describe()). */
  readonly device: string;
}

/** What run.json records of the policy in `settings` (a model of L layers) chosen on `device`. */
export function recordRecompute(setting: TrainConfig['gradient_checkpointing'], settings: StepSettings, L: number, device: string): RecordedRecompute {
  const policy = settings.recompute ?? (settings.gradientCheckpointing ? 'full' : 'none');
  return { setting, checkpoint_layers: checkpointedLayers(policy, L), layers: L, why: settings.recomputeWhy ?? null, device };
}

/** The policy of k recomputed layers of L, in the form autoRecompute gives it (0 → none, L → full). */
export function policyOfLayers(k: number, L: number): RecomputePolicy {
  return k === 0 ? 'none' : k === L ? 'full' : { checkpointLayers: k };
}

/**
 * The recompute a run in `record` last trained with: its latest resume's where that recorded one,
 * else its start's; undefined for a run.json without it (written before the record held it).
 */
export function latestRecompute(record: { readonly recompute?: RecordedRecompute; readonly resumes: readonly { readonly recompute?: RecordedRecompute }[] }): RecordedRecompute | undefined {
  for (let i = record.resumes.length - 1; i >= 0; i--) {
    const r = record.resumes[i].recompute;
    if (r !== undefined) return r;
  }
  return record.recompute;
}
