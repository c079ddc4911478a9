import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { writeQwen3Gguf } from '../../src/export/gguf-model.js';
import { readGgufTokenizer } from '../../src/export/gguf-tokenizer.js';
import { MergedWeights } from '../../src/export/merge.js';
import { readPeftAdapter } from '../../src/model/peft.js';
import { tokenizerSourceDir } from '../../src/export/tokenizer-files.js';
import { Generator } from '../../src/generate/generator.js';
import { readQwen3Config } from '../../src/model/config.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * Issue 5 item 7's test: 20 greedy tokens from the fixture model + adapter (our Generator: KV cache
 * on the GPU, adapter unmerged on the full-precision base) equal llama.cpp's greedy tokens
 * (node-llama-cpp 3.21.1, CPU build, temperature 0 = its greedy sampler, no penalties) on the merged
 * F32 GGUF that `export` writes — for a chat prompt rendered as in training and for plain text.
 * llama.cpp runs with flash attention off and an F32 KV cache (its flash path rounds through f16).
 */
const NEW_TOKENS = 20;

describe('greedy generation equals llama.cpp on the merged F32 GGUF', () => {
  let dir: string;
  let llama: Llama;
  let merged: LlamaModel;
  let tok: QwenTokenizer;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'generate-llama-'));
    const config = await readQwen3Config(TINY_MODEL);
    tok = await QwenTokenizer.load(TINY_MODEL);
    const ggufTok = await readGgufTokenizer(tokenizerSourceDir(TINY_MODEL), config, tok.chatTemplate);
    const weights = await MergedWeights.open(TINY_MODEL, await readPeftAdapter(TINY_ADAPTER, config));
    try {
      await writeQwen3Gguf(join(dir, 'merged-f32.gguf'), weights, { fileType: 'f32', name: 'tiny', tokenizer: ggufTok });
    } finally {
      await weights.close();
    }
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    merged = await llama.loadModel({ modelPath: join(dir, 'merged-f32.gguf') });
  });

  afterAll(async () => {
    await merged?.dispose();
    await llama?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * llama.cpp's greedy continuation of `prompt` (end-of-generation tokens included, so nothing is
   * hidden); with `penalty`, its repeat-penalty sampler (before greedy) over the last `lastN` tokens
   * of prompt + generated, as ours.
   */
  async function llamaGreedy(prompt: readonly number[], penalty?: { penalty: number; lastN: number }): Promise<number[]> {
    const ctx = await merged.createContext({
      contextSize: 128,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
      threads: 2,
    });
    try {
      const out: number[] = [];
      const history = [...prompt];
      const repeatPenalty = penalty && { penalty: penalty.penalty, maxPunishTokens: penalty.lastN, punishTokens: () => history };
      for await (const t of ctx.getSequence().evaluate([...prompt], { temperature: 0, yieldEogToken: true, repeatPenalty })) {
        out.push(t);
        history.push(t);
        if (out.length === NEW_TOKENS) break;
      }
      return out;
    } finally {
      await ctx.dispose();
    }
  }

  const inputs = [
    { messages: [{ role: 'user' as const, content: `${DEFAULT_USER_PREFIX}a fox in the snow` }] },
    { prompt: 'Slow dolly in on the studio at night, hard side light' },
  ];
  // Plain greedy, then greedy after llama.cpp's repeat penalty (which also checks ours against its
  // sampler: divide positive logits, multiply negative ones, over the last 64 tokens).
  const settings = [
    { name: 'greedy', repeatPenalty: 1, repeatLastN: 0 },
    { name: 'greedy, repeat penalty 1.3 over 64 tokens', repeatPenalty: 1.3, repeatLastN: 64 },
  ];
  for (const setting of settings) {
    it(`${NEW_TOKENS} tokens equal llama.cpp's (${setting.name}), for a chat prompt and for plain text`, async () => {
      const gpu = await testGpu();
      const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
      const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
      const gen = await Generator.create(gpu, model, { adapter, maxContext: 128, tokenizer: tok });
      try {
        for (const input of inputs) {
          const prompt = gen.tokenize(input);
          // No stop token: llama.cpp's sequence is compared whole, end-of-sequence tokens included.
          const ours = await gen.generate(
            { tokens: prompt },
            { temperature: 0, repeatPenalty: setting.repeatPenalty, repeatLastN: setting.repeatLastN, maxNewTokens: NEW_TOKENS, stopTokens: [] },
          );
          const theirs = await llamaGreedy(prompt, setting.repeatPenalty === 1 ? undefined : { penalty: setting.repeatPenalty, lastN: setting.repeatLastN });
          console.log(
            `${setting.name}, ${'messages' in input ? 'chat' : 'text'} prompt (${prompt.length} tokens):\n  ours      ${ours.tokens.join(' ')}\n` +
              `  llama.cpp ${theirs.join(' ')}\n  ${new Set(ours.tokens).size} distinct tokens; text ${JSON.stringify(ours.text)}`,
          );
          expect(ours.tokens).toEqual(theirs);
          expect(ours.stopReason).toBe('length');
        }
      } finally {
        gen.destroy();
      }
    });
  }
});
