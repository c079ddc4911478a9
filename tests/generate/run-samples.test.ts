import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { Generator } from '../../src/generate/generator.js';
import { createRunSampler, type RunSampler } from '../../src/generate/run-samples.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { loadLoraAdapter, type LoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The report's sample generations: each configured prompt rendered as training renders a bare
 * instruction (system prompt, user prefix), the Modelfile's sampling with the run's seed, and the
 * adapter read live from its GPU buffers (what the trainer is updating), not a copy.
 */
describe('createRunSampler', () => {
  let gpu: Gpu;
  let model: Qwen3Model;
  let adapter: LoraAdapter;
  let tok: QwenTokenizer;
  let sampler: RunSampler | undefined;
  const prompts = ['a fox on a frozen lake', 'rain over a night market'];
  const config = resolveConfig({ sample_prompts: prompts, sample_max_new_tokens: 12, seed: 7, user_prefix: 'Shot: ', system_prompt: 'Write one prompt.' }, 'test').config;

  beforeAll(async () => {
    gpu = await testGpu();
    model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    tok = await QwenTokenizer.load(TINY_MODEL);
    sampler = await createRunSampler(gpu, model, adapter, tok, config);
  });
  afterAll(() => sampler?.destroy());

  it('answers every prompt as a chat turn rendered like training, with the run seed', async () => {
    const samples = await sampler!.sample(5);
    expect(samples.map((s) => [s.step, s.prompt])).toEqual(prompts.map((p) => [5, p]));
    const reference = await Generator.create(gpu, model, { adapter, tokenizer: tok, maxContext: 256 });
    try {
      for (const [i, p] of prompts.entries()) {
        const r = await reference.generate(
          { messages: [{ role: 'system', content: 'Write one prompt.' }, { role: 'user', content: `Shot: ${p}` }] },
          { maxNewTokens: 12, seed: 7 },
        );
        expect(samples[i].output).toBe(r.text);
        expect(r.tokens.length).toBeGreaterThan(0);
      }
    } finally {
      reference.destroy();
    }
    // the same step again gives the same samples (fixed seed)
    expect(await sampler!.sample(5)).toEqual(samples);
  }, 120_000);

  it('reads the adapter in place: changing its parameters changes the samples', async () => {
    const before = await sampler!.sample(1);
    const pair = adapter.layers[0].q_proj!;
    const b = await gpu.readF32(pair.b);
    gpu.write(pair.b, b.map((x, i) => x + (i % 3 === 0 ? 0.5 : -0.5)));
    const after = await sampler!.sample(2);
    gpu.write(pair.b, b);
    expect(after.map((s) => s.output)).not.toEqual(before.map((s) => s.output));
  }, 120_000);

  it('makes no sampler when there are no prompts or no tokens to generate', async () => {
    expect(await createRunSampler(gpu, model, adapter, tok, { ...config, sample_prompts: [] })).toBeUndefined();
    expect(await createRunSampler(gpu, model, adapter, tok, { ...config, sample_max_new_tokens: 0 })).toBeUndefined();
  });
});
