import { ConfigError } from '../errors.js';

/**
 * Which layers the forward does not keep (gradient checkpointing): their activations are
 * recomputed from the layer's input just before the backward goes through them.
 *   'none'  every layer keeps its Saved set (fastest, most memory; gradient_checkpointing: false)
 *   'full'  every layer is recomputed into one shared set (gradient_checkpointing: true)
 *   { checkpointLayers: k }  layers 0..k−1 are recomputed, layers k..L−1 keep theirs
 */
export type RecomputePolicy = 'none' | 'full' | { readonly checkpointLayers: number };

/** How many leading layers (0..k−1) are recomputed under `policy` for a model of L layers. */
export function checkpointedLayers(policy: RecomputePolicy, L: number): number {
  if (policy === 'none') return 0;
  if (policy === 'full') return L;
  const k = policy.checkpointLayers;
  if (!Number.isInteger(k) || k < 0 || k > L) {
    throw new ConfigError(`gradient_checkpointing: checkpoint_layers = ${k}; expected a whole number from 0 to the model's ${L} layers`);
  }
  return k;
}

/**
 * The config key `gradient_checkpointing`: true (all layers), false (none), an integer k or
 * { checkpoint_layers: k } (layers 0..k−1); 'auto' is chosen against the device's memory by
 * autoRecompute (src/train/auto-recompute.ts) and means all layers here.
 */
export function recomputePolicy(value: boolean | 'auto' | number | { readonly checkpoint_layers: number }): RecomputePolicy {
  // 'auto' without a device to plan against (resolved by autoRecompute where there is one): all layers.
  if (value === true || value === 'auto') return 'full';
  if (value === false) return 'none';
  return { checkpointLayers: typeof value === 'number' ? value : value.checkpoint_layers };
}

export function describeRecompute(policy: RecomputePolicy, L: number): string {
  const k = checkpointedLayers(policy, L);
  return k === 0 ? 'off' : k === L ? 'on' : `layers 0..${k - 1} of ${L}`;
}
