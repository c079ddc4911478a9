import { describe, expect, it } from 'vitest';
import { loadConfig, resolveConfig } from '../../src/config/load.js';
import type { Qwen3Config } from '../../src/model/config.js';
import { autoRecompute, maxMemoryBytes, plannableBytes, resumedAutoRecompute } from '../../src/train/auto-recompute.js';
import { guessDeviceMemory, planStep, type StepSettings } from '../../src/train/plan.js';
import { checkpointedLayers, recomputePolicy } from '../../src/train/recompute.js';
import { latestRecompute, recordRecompute } from '../../src/train/recompute-record.js';
import { runStepSettings, stepSettings } from '../../src/train/step-settings.js';
import { testGpu } from '../helpers/gpu.js';
import { readFileSync } from 'node:fs';
import { parseQwen3Config } from '../../src/model/config.js';

/**
 * gradient_checkpointing: auto (issue 11 item 6): the fewest recomputed layers whose plan fits the
 * budget, checked against the plan itself at the Qwen3-4B shape: the chosen k fits and k − 1 does
 * not; no budget → every layer; a budget too small → every layer, said so.
 */
const QWEN3_4B: Qwen3Config = parseQwen3Config(JSON.parse(readFileSync(new URL('../../configs/models/qwen3-4b.json', import.meta.url), 'utf8')), 'configs/models/qwen3-4b.json');

function settings4b(): StepSettings {
  const config = resolveConfig({ gradient_checkpointing: 'auto', lora_r: 32, per_device_train_batch_size: 8, max_seq_length: 512 }, 'test').config;
  return stepSettings(config, 8, 512, 512, 'chunked', 'f32');
}
const totalAt = (s: StepSettings, k: number): number => planStep(QWEN3_4B, { ...s, recompute: { checkpointLayers: k }, gradientCheckpointing: k > 0 }).total;

describe('gradient_checkpointing: auto', () => {
  it('is accepted by the config with max_memory, and means every layer where there is no device', () => {
    const c = resolveConfig({ gradient_checkpointing: 'auto', max_memory: '20GiB' }, 'test').config;
    expect(c.gradient_checkpointing).toBe('auto');
    expect(recomputePolicy(c.gradient_checkpointing)).toBe('full');
    expect(maxMemoryBytes(c.max_memory)).toBe(20 * 2 ** 30);
    expect(maxMemoryBytes(24)).toBe(24 * 2 ** 30);
    expect(maxMemoryBytes('16GB')).toBe(16e9);
    expect(maxMemoryBytes('20000MiB')).toBe(20000 * 2 ** 20);
    expect(maxMemoryBytes(null)).toBeUndefined();
    expect(() => maxMemoryBytes('lots')).toThrow(/max_memory: "lots"; expected a size/);
    expect(() => maxMemoryBytes('24G', '--max-memory')).toThrow(/--max-memory: "24G"/);
    expect(() => resolveConfig({ max_memory: 'lots' }, 'test')).toThrow(/max_memory/);
    expect(() => resolveConfig({ gradient_checkpointing: 'sometimes' }, 'test')).toThrow(/gradient_checkpointing/);
  });

  it('picks the fewest recomputed layers whose plan fits a 24 GB card at the Qwen3-4B shape (B8×512)', () => {
    const s = settings4b();
    const budget = 24 * 2 ** 30;
    const auto = autoRecompute(QWEN3_4B, s, budget, 'the device\'s');
    const L = QWEN3_4B.numHiddenLayers;
    const k = auto.policy === 'none' ? 0 : auto.policy === 'full' ? L : auto.policy.checkpointLayers;
    expect(totalAt(s, k)).toBeLessThanOrEqual(plannableBytes(budget));
    if (k > 0) expect(totalAt(s, k - 1)).toBeGreaterThan(plannableBytes(budget));
    // B8×512 keeps 34 GiB with no layer recomputed, 6 GiB with all: on 24 GB some layers are recomputed, not all.
    expect(k).toBeGreaterThan(0);
    expect(k).toBeLessThan(L);
    expect(auto.why).toMatch(new RegExp(`^auto: ${k} of ${L} layers recomputed`));
  });

  it('keeps everything with room to spare, recomputes everything without a known budget or when nothing fits', () => {
    const s = settings4b();
    expect(autoRecompute(QWEN3_4B, s, 80 * 2 ** 30, 'the device\'s').policy).toBe('none');
    const unknown = autoRecompute(QWEN3_4B, s, undefined, 'the device\'s');
    expect(unknown.policy).toBe('full');
    expect(unknown.why).toMatch(/does not report its memory; set max_memory/);
    const tiny = autoRecompute(QWEN3_4B, s, 4 * 2 ** 30, 'max_memory');
    expect(tiny.policy).toBe('full');
    expect(tiny.why).toMatch(/still over/);
  });
});

/**
 * auto as the default, through runStepSettings (what `train` and `--dry-run` plan with) on the test
 * adapter: the expected layer count is found by a brute-force loop over every k of the plan's own
 * totals under the documented rule (a plan fits a budget b when it is at most 0.9 b − 2 GiB), not by
 * numbers written down; true/false ignore max_memory; a resumed run keeps the layer count run.json
 * recorded where that plan fits, and plans afresh, saying so, where it does not.
 */
const GiB = 2 ** 30;
const fitsRule = (total: number, budget: number): boolean => total <= 0.9 * budget - 2 * GiB;

describe('gradient_checkpointing: auto by default, with max_memory and on resume', () => {
  const B = 8;
  const T = 512;
  const config = (raw: Record<string, unknown>) => resolveConfig({ lora_r: 32, per_device_train_batch_size: B, max_seq_length: T, ...raw }, 'test').config;
  const layersOf = (s: StepSettings): number => checkpointedLayers(s.recompute!, QWEN3_4B.numHiddenLayers);
  /** Plan totals for k = 0..L recomputed layers, at the settings the run would get (its recompute replaced). */
  const bruteTotals = (s: StepSettings): number[] => Array.from({ length: QWEN3_4B.numHiddenLayers + 1 }, (_, k) => totalAt(s, k));
  /** The fewest k whose total fits `budget` by the rule; L where none does (auto then recomputes every layer). */
  const fewestFitting = (totals: number[], budget: number): number => {
    for (let k = 0; k < totals.length; k++) if (fitsRule(totals[k], budget)) return k;
    return totals.length - 1;
  };
  const BUDGETS_GIB = [4, 8, 12, 16, 20, 24, 32, 48, 80];

  it('an absent key and the embedded default mean auto; the shipped seed configs keep true', () => {
    expect(resolveConfig({}, 'c.yaml').config.gradient_checkpointing).toBe('auto');
    const root = new URL('../../configs/', import.meta.url).pathname;
    expect(loadConfig(`${root}embedded-default.yaml`).config.gradient_checkpointing).toBe('auto');
    for (const f of ['qwen3-4b-deforum-v2.yaml', 'qwen3-4b-deforum-v7.yaml']) expect(loadConfig(`${root}${f}`).config.gradient_checkpointing, f).toBe(true);
  });

  it('with max_memory, the run\'s settings recompute the fewest layers whose plan fits (brute force over k), and say so', async () => {
    const gpu = await testGpu();
    const L = QWEN3_4B.numHiddenLayers;
    const seen = new Set<number>();
    for (const gib of BUDGETS_GIB) {
      const s = runStepSettings(config({ max_memory: gib }), QWEN3_4B, gpu, B, T);
      const totals = bruteTotals(s);
      const expected = fewestFitting(totals, gib * GiB);
      expect(layersOf(s), `max_memory ${gib}`).toBe(expected);
      expect(planStep(QWEN3_4B, s).total, `max_memory ${gib}`).toBe(totals[expected]);
      expect(s.recomputeWhy, `max_memory ${gib}`).toMatch(/max_memory/);
      expect(s.gradientCheckpointing).toBe(expected > 0);
      seen.add(expected === 0 ? 0 : expected === L ? L : -1);
    }
    // The budgets span all three outcomes: nothing recomputed, some layers, every layer.
    expect([...seen].sort()).toEqual([-1, 0, L].sort());
  });

  it('without max_memory, auto plans against the device\'s memory, or recomputes every layer where the adapter does not report it', async () => {
    const gpu = await testGpu();
    const s = runStepSettings(config({}), QWEN3_4B, gpu, B, T);
    const known = guessDeviceMemory(gpu.adapterInfo);
    if (known === undefined) {
      expect(s.recompute).toBe('full');
      expect(s.recomputeWhy).toMatch(/does not report its memory; set max_memory/);
    } else {
      expect(layersOf(s)).toBe(fewestFitting(bruteTotals(s), known));
    }
  });

  it('true and false keep their meaning whatever max_memory says', async () => {
    const gpu = await testGpu();
    const full = runStepSettings(config({ gradient_checkpointing: true, max_memory: 80 }), QWEN3_4B, gpu, B, T);
    const none = runStepSettings(config({ gradient_checkpointing: false, max_memory: 4 }), QWEN3_4B, gpu, B, T);
    expect(full.recompute).toBe('full');
    expect(none.recompute).toBe('none');
    expect(full.recomputeWhy).toBeUndefined();
    expect(none.recomputeWhy).toBeUndefined();
  });

  it('a resumed run keeps the recorded layer count where it fits, and re-plans, saying why, where it does not', async () => {
    const gpu = await testGpu();
    const L = QWEN3_4B.numHiddenLayers;
    const base = runStepSettings(config({ max_memory: 24 }), QWEN3_4B, gpu, B, T);
    const totals = bruteTotals(base);
    // A start on a 24 GiB budget recorded some k; pick budgets where a fresh plan differs from it.
    const k = fewestFitting(totals, 24 * GiB);
    const recorded = recordRecompute('auto', base, L, 'a 24 GB card');
    expect(recorded).toMatchObject({ setting: 'auto', checkpoint_layers: k, layers: L, device: 'a 24 GB card' });
    expect(latestRecompute({ recompute: recorded, resumes: [{}] })).toBe(recorded);

    const roomier = BUDGETS_GIB.find((g) => fewestFitting(totals, g * GiB) < k)!;
    expect(roomier).toBeDefined();
    const kept = runStepSettings(config({ max_memory: roomier }), QWEN3_4B, gpu, B, T, recorded);
    expect(layersOf(kept)).toBe(k);
    expect(kept.recomputeWhy).toMatch(new RegExp(`^auto: ${k} of ${L} layers recomputed when this run last trained \\(run.json, on a 24 GB card\\), kept on resume; a fresh plan here would recompute ${fewestFitting(totals, roomier * GiB)}`));

    const unknown = resumedAutoRecompute(QWEN3_4B, base, undefined, 'the device\'s', recorded);
    expect(checkpointedLayers(unknown.policy, L)).toBe(k);
    expect(unknown.why).toMatch(new RegExp(`kept on resume; a fresh plan here would recompute ${L} \\(every layer recomputed — the device does not report its memory`));

    const tighter = [...BUDGETS_GIB].reverse().find((g) => fewestFitting(totals, g * GiB) > k && fewestFitting(totals, g * GiB) < L)!;
    expect(tighter).toBeDefined();
    const replanned = runStepSettings(config({ max_memory: tighter }), QWEN3_4B, gpu, B, T, recorded);
    expect(layersOf(replanned)).toBe(fewestFitting(totals, tighter * GiB));
    expect(fitsRule(totals[k], tighter * GiB)).toBe(false);
    expect(replanned.recomputeWhy).toMatch(new RegExp(`re-planned on resume: run.json records ${k} of ${L} layers recomputed .* does not fit`));

    const otherModel = runStepSettings(config({ max_memory: 24 }), QWEN3_4B, gpu, B, T, { ...recorded, layers: 28 });
    expect(layersOf(otherModel)).toBe(k);
    expect(otherModel.recomputeWhy).toMatch(new RegExp(`re-planned on resume: .*does not match this model's ${L} layers`));
  });
});
