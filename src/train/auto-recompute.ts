/**
 * `gradient_checkpointing: auto`: the fewest recomputed layers (0..k−1, k smallest) whose memory
 * plan fits the budget — `max_memory` when given, else the device's memory where it can be told
 * (guessDeviceMemory) — so that a card spends the memory it has on speed (recomputing a layer costs
 * its forward again). The budget keeps headroom for what the plan does not hold (Dawn's and the
 * driver's own allocations: 4.9 GiB planned showed 6.8 GiB in nvidia-smi on an H100): a plan fits
 * when it is at most 90 % of the budget less 2 GiB. Without a known budget every layer is
 * recomputed, as with `true`. The plan total falls as k grows (each recomputed layer drops its
 * Saved set), so the search is a bisection over k.
 *
 * A resumed run keeps the policy its run.json records (resumedAutoRecompute) where that plan fits
 * the budget here (or the budget is unknown), and says so; only where it does not fit does it plan
 * afresh, and it says that too: the policy changes speed and memory, and the gradients only to
 * float rounding (tests/train/recompute.test.ts), so a resume never changes it silently.
 */
import { ConfigError } from '../errors.js';
import type { Qwen3Config } from '../model/config.js';
import { planStep, type StepSettings } from './plan.js';
import type { RecomputePolicy } from './recompute.js';
import { policyOfLayers, type RecordedRecompute } from './recompute-record.js';

export interface AutoRecompute {
  readonly policy: RecomputePolicy;
  /** Why, for the run's output, e.g. "auto: 3 of 36 layers recomputed to fit 24.0 GiB". */
  readonly why: string;
}

/** The share of the budget a plan may use, and the fixed headroom beside it. */
const BUDGET_SHARE = 0.9;
const HEADROOM_BYTES = 2 * 2 ** 30;

/** Bytes a plan may total within a budget of `bytes`. */
export function plannableBytes(bytes: number): number {
  return Math.max(0, bytes * BUDGET_SHARE - HEADROOM_BYTES);
}

/**
 * `max_memory` in bytes: a number of GiB or a size string ("20GiB", "20GB", "20000MiB"); null →
 * undefined. A string of another form is a ConfigError naming `key` (the config key, or the flag
 * that gave it).
 */
export function maxMemoryBytes(value: number | string | null, key = 'max_memory'): number | undefined {
  if (value === null) return undefined;
  if (typeof value === 'number') return value * 2 ** 30;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)\s*$/i.exec(value);
  if (m === null) throw new ConfigError(`${key}: ${JSON.stringify(value)}; expected a size such as "20GiB", "20GB" or "20000MiB"`);
  const unit = m[2].toLowerCase();
  const scale = unit === 'gib' ? 2 ** 30 : unit === 'gb' ? 1e9 : unit === 'mib' ? 2 ** 20 : 1e6;
  return Number(m[1]) * scale;
}

const gib = (b: number): string => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)} GiB` : `${(b / 2 ** 20).toFixed(0)} MiB`);

/** The plan's total with layers 0..k−1 recomputed. */
function totalWith(model: Qwen3Config, settings: StepSettings, k: number): number {
  return planStep(model, { ...settings, recompute: { checkpointLayers: k }, gradientCheckpointing: k > 0 }).total;
}

/** The policy for `settings` (its own recompute ignored) on a budget of `budgetBytes` (undefined: unknown). */
export function autoRecompute(model: Qwen3Config, settings: StepSettings, budgetBytes: number | undefined, budgetFrom: string): AutoRecompute {
  const L = model.numHiddenLayers;
  if (budgetBytes === undefined) {
    return { policy: 'full', why: 'auto: every layer recomputed — the device does not report its memory; set max_memory to let auto use it' };
  }
  const limit = plannableBytes(budgetBytes);
  const total = (k: number): number => totalWith(model, settings, k);
  const fits = (k: number): boolean => total(k) <= limit;
  if (!fits(L)) {
    return { policy: 'full', why: `auto: every layer recomputed, and the plan is still over ${gib(limit)} (90 % of ${budgetFrom} ${gib(budgetBytes)} less 2 GiB)` };
  }
  let lo = 0;
  let hi = L; // fits(hi)
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (fits(mid)) hi = mid;
    else lo = mid + 1;
  }
  return { policy: policyOfLayers(hi, L), why: `auto: ${hi} of ${L} layers recomputed, the fewest whose plan (${gib(total(hi))}) fits ${gib(limit)} of ${budgetFrom} ${gib(budgetBytes)}` };
}

const layersOf = (p: RecomputePolicy, L: number): number => (p === 'none' ? 0 : p === 'full' ? L : p.checkpointLayers);

/**
 * `auto` for a resumed run whose run.json recorded `recorded`: the recorded layer count where its
 * plan fits the budget here or the budget is unknown (with what a fresh plan would pick, when that
 * differs), else a fresh plan, saying the recorded one does not fit. A record for another layer
 * count (not the same model) is set aside, said so.
 */
export function resumedAutoRecompute(model: Qwen3Config, settings: StepSettings, budgetBytes: number | undefined, budgetFrom: string, recorded: RecordedRecompute): AutoRecompute {
  const L = model.numHiddenLayers;
  const fresh = autoRecompute(model, settings, budgetBytes, budgetFrom);
  const k = recorded.checkpoint_layers;
  const was = `${k} of ${recorded.layers} layers recomputed when this run last trained (run.json, on ${recorded.device})`;
  if (recorded.layers !== L || !Number.isInteger(k) || k < 0 || k > L) {
    return { policy: fresh.policy, why: `${fresh.why} — re-planned on resume: run.json records ${was}, which does not match this model's ${L} layers` };
  }
  const planned = totalWith(model, settings, k);
  if (budgetBytes !== undefined && planned > plannableBytes(budgetBytes)) {
    return { policy: fresh.policy, why: `${fresh.why} — re-planned on resume: run.json records ${was}, whose plan (${gib(planned)}) does not fit ${gib(plannableBytes(budgetBytes))} of ${budgetFrom} ${gib(budgetBytes)} here` };
  }
  const j = layersOf(fresh.policy, L);
  const other = j === k ? '' : `; a fresh plan here would recompute ${j} (${fresh.why.replace(/^auto: /, '')}): set gradient_checkpointing: ${j} to take it`;
  return { policy: policyOfLayers(k, L), why: `auto: ${was}, kept on resume${other}` };
}
