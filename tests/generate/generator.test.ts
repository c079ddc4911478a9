import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { generationPrompt } from '../../src/data/render.js';
import { ConfigError, ShapeError } from '../../src/errors.js';
import { Generator } from '../../src/generate/generator.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { PROJECTIONS } from '../../src/model/checkpoint.js';
import { parseQwen3Config } from '../../src/model/config.js';
import { createLoraAdapter } from '../../src/model/lora-init.js';
import { loadLoraAdapter, type LoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/** The Generator's contract on the fixture model + adapter (NF4 base): input forms, stops, seeds, limits. */
describe('Generator', () => {
  let gpu: Gpu;
  let model: Qwen3Model;
  let adapter: LoraAdapter;
  let tok: QwenTokenizer;
  let gen: Generator;
  const user = { role: 'user' as const, content: `${DEFAULT_USER_PREFIX}a lighthouse at dawn` };

  beforeAll(async () => {
    gpu = await testGpu();
    model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    tok = await QwenTokenizer.load(TINY_MODEL);
    gen = await Generator.create(gpu, model, { adapter, maxContext: 80, prefillChunk: 16, tokenizer: tok });
  });

  it('renders messages as training does (system prompt first, the template’s generation prompt)', () => {
    const expected = tok.encode(generationPrompt(tok, [{ role: 'system', content: DEFAULT_SYSTEM_PROMPT }, user], false));
    expect(gen.tokenize({ messages: [user] })).toEqual(expected);
    // an explicit system message is kept; systemPrompt null adds none
    const own = [{ role: 'system' as const, content: 'Be brief.' }, user];
    expect(gen.tokenize({ messages: own })).toEqual(tok.encode(generationPrompt(tok, own, false)));
    expect(gen.tokenize({ messages: [user] }, { systemPrompt: null })).toEqual(tok.encode(generationPrompt(tok, [user], false)));
    expect(gen.tokenize({ prompt: 'plain text' })).toEqual(tok.encode('plain text'));
    expect(gen.tokenize({ tokens: [1, 2, 3] })).toEqual([1, 2, 3]);
  });

  it('streams exactly the text it returns, and ends before a stop string', async () => {
    const greedy = { temperature: 0, repeatPenalty: 1.3, maxNewTokens: 16 };
    const pieces: string[] = [];
    const free = await gen.generate({ messages: [user] }, greedy, (t) => pieces.push(t));
    expect(free.stopReason).toBe('length');
    expect(free.tokens.length).toBe(16);
    expect(pieces.join('')).toBe(free.text);
    expect(free.text).toBe(tok.decode(free.tokens));
    expect(free.promptTokens).toBe(gen.tokenize({ messages: [user] }).length);
    // a stop string from the middle of that text (greedy: the same tokens again)
    const stop = free.text.slice(Math.floor(free.text.length / 2), Math.floor(free.text.length / 2) + 3);
    const cut = free.text.indexOf(stop);
    const streamed: string[] = [];
    const stopped = await gen.generate({ messages: [user] }, { ...greedy, stop: [stop] }, (t) => streamed.push(t));
    expect(stopped.stopReason).toBe('stop');
    expect(stopped.text).toBe(free.text.slice(0, cut));
    expect(streamed.join('')).toBe(stopped.text);
    expect(free.tokens.slice(0, stopped.tokens.length)).toEqual(stopped.tokens);
  });

  it('stops at an end-of-sequence token, which is not returned', async () => {
    const free = await gen.generate({ prompt: 'A fox' }, { temperature: 0, repeatPenalty: 1.3, maxNewTokens: 8 });
    const eos = free.tokens[3];
    const r = await gen.generate({ prompt: 'A fox' }, { temperature: 0, repeatPenalty: 1.3, maxNewTokens: 8, stopTokens: [eos] });
    expect(r.stopReason).toBe('eos');
    expect(r.tokens).toEqual(free.tokens.slice(0, free.tokens.indexOf(eos)));
    expect(gen.eosTokens.has(tok.eosTokenId)).toBe(true);
    expect(gen.eosTokens.has(tok.tokenToId('<|im_end|>')!)).toBe(true);
  });

  it('samples reproducibly from a seed', async () => {
    const options = { temperature: 1.5, topK: 0, topP: 1, repeatPenalty: 1, maxNewTokens: 10 };
    const a = await gen.generate({ prompt: 'A fox' }, { ...options, seed: 7 });
    const b = await gen.generate({ prompt: 'A fox' }, { ...options, seed: 7 });
    const c = await gen.generate({ prompt: 'A fox' }, { ...options, seed: 8 });
    expect(a.seed).toBe(7);
    expect(b.tokens).toEqual(a.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
    expect(a.tokensPerSecond).toBeGreaterThan(0);
    expect(a.decodeTokensPerSecond).toBeGreaterThan(0);
  });

  it('stops when the context is full, and refuses a prompt longer than the context', async () => {
    const prompt = Array.from({ length: 75 }, (_, i) => 1000 + i);
    const r = await gen.generate({ tokens: prompt }, { temperature: 0, maxNewTokens: 50 });
    expect(r.stopReason).toBe('context');
    expect(prompt.length + r.tokens.length).toBe(gen.maxContext + 1); // the last token is sampled, never fed
    await expect(gen.generate({ tokens: Array.from({ length: 81 }, () => 5) }, { maxNewTokens: 1 })).rejects.toThrow(/81 tokens, more than the context of 80/);
    await expect(gen.generate({ tokens: [151936] })).rejects.toThrow(ConfigError);
    await expect(gen.generate({ prompt: '' })).rejects.toThrow(/prompt is empty/);
    await expect(gen.generate({ messages: [user, { role: 'assistant', content: 'x' }] })).rejects.toThrow(/ends with an assistant message/);
  });

  it('refuses an adapter made for another model shape', async () => {
    const other = parseQwen3Config({ ...(model.config.raw as Record<string, unknown>), num_hidden_layers: 3 }, 'a 3-layer config');
    const wrong = createLoraAdapter(gpu, other, { r: 4, alpha: 8, dropout: 0, targetModules: PROJECTIONS, useRslora: false }, 1);
    await expect(Generator.create(gpu, model, { adapter: wrong, maxContext: 16, tokenizer: tok })).rejects.toThrow(ShapeError);
  });
});
