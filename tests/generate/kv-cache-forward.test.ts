import { describe, expect, it } from 'vitest';
import { DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { Generator } from '../../src/generate/generator.js';
import { argmax } from '../../src/generate/sampling.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { loadLoraAdapter, type LoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { compareArrays, expectRelNorm } from '../helpers/compare.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The KV-cached generation path against the plain forward pass (ForwardProgram, the one checked
 * against transformers + PEFT): at every step of a greedy decode of the fixture model + adapter, the
 * logits after prefill / after each appended token equal a full forward of the whole prefix
 * (logitsLast), on the full-precision and on the NF4 base.
 */
const STEPS = 20;

async function setup(gpu: Gpu, base: 'full' | 'nf4'): Promise<{ model: Qwen3Model; adapter: LoraAdapter; tok: QwenTokenizer }> {
  const model = await Qwen3Model.load(gpu, TINY_MODEL, { base });
  const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
  return { model, adapter, tok: await QwenTokenizer.load(TINY_MODEL) };
}

async function fullForwardLogits(model: Qwen3Model, adapter: LoraAdapter, ids: readonly number[]): Promise<Float32Array> {
  const inputIds = Int32Array.from(ids);
  const r = await model.forward({ B: 1, T: ids.length, inputIds }, { adapter, logitsLast: true });
  return r.logitsLast!;
}

describe('generation with the KV cache equals the full forward', () => {
  for (const base of ['full', 'nf4'] as const) {
    it(`at every step of a ${STEPS}-token greedy decode (${base} base + adapter)`, async () => {
      const gpu = await testGpu();
      const { model, adapter, tok } = await setup(gpu, base);
      // A prompt longer than one prefill chunk (8), ending mid-chunk.
      const gen = await Generator.create(gpu, model, { adapter, maxContext: 96, prefillChunk: 8, tokenizer: tok });
      try {
        const prompt = gen.tokenize({ messages: [{ role: 'user', content: `${DEFAULT_USER_PREFIX}a fox in the snow` }] });
        expect(prompt.length % 8).not.toBe(0);
        expect(prompt.length).toBeGreaterThan(16);
        const ids = [...prompt];
        let logits = (await gen.prefill(prompt)).slice();
        let worst = 0;
        for (let step = 0; step <= STEPS; step++) {
          const ref = await fullForwardLogits(model, adapter, ids);
          // f32 arithmetic in another order (split attention, matvec projections and lm_head): measured ≤ 5e-7
          expectRelNorm(`${base} logits after ${ids.length} tokens (step ${step})`, logits, ref, 1e-5);
          worst = Math.max(worst, compareArrays(logits, ref, 0, 0).relNorm);
          expect(argmax(logits), `greedy token at step ${step}`).toBe(argmax(ref));
          if (step === STEPS) break;
          const next = argmax(logits);
          ids.push(next);
          logits = (await gen.append(next)).slice();
        }
        expect(gen.length).toBe(prompt.length + STEPS);
        console.log(`${base}: KV-cached vs full forward, worst relative error over ${STEPS + 1} steps: ${worst.toExponential(2)}`);
      } finally {
        gen.destroy();
      }
    });
  }

  it('prefill in several chunks equals prefill in one chunk, and a second prompt reuses the cache cleanly', async () => {
    const gpu = await testGpu();
    const { model, adapter, tok } = await setup(gpu, 'full');
    const small = await Generator.create(gpu, model, { adapter, maxContext: 64, prefillChunk: 5, tokenizer: tok });
    const whole = await Generator.create(gpu, model, { adapter, maxContext: 64, prefillChunk: 64, tokenizer: tok });
    try {
      const long = tok.encode('Slow dolly in on the studio at night, hard side light, rain on the window');
      const short = tok.encode('A lighthouse at dawn');
      expect(long.length).toBeGreaterThan(10);
      const a = (await small.prefill(long)).slice();
      const b = (await whole.prefill(long)).slice();
      // the same arithmetic per row; only the attention's key splits differ
      expectRelNorm('5-token chunks vs one chunk', a, b, 1e-6);
      // A new, shorter sequence after a longer one: stale cache rows past it must not be seen.
      const c = (await small.prefill(short)).slice();
      expectRelNorm('second prompt vs a full forward', c, await fullForwardLogits(model, adapter, short), 1e-5);
    } finally {
      small.destroy();
      whole.destroy();
    }
  });
});
