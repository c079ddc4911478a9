import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { generationPrompt } from '../../src/data/render.js';
import { writeQwen3Gguf, type GgufFileType } from '../../src/export/gguf-model.js';
import { writeLoraGguf } from '../../src/export/gguf-lora.js';
import { readGgufTokenizer, type GgufTokenizer } from '../../src/export/gguf-tokenizer.js';
import { MergedWeights } from '../../src/export/merge.js';
import { readPeftAdapter, type HostLoraAdapter } from '../../src/export/peft.js';
import { tokenizerSourceDir } from '../../src/export/tokenizer-files.js';
import { readQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The exports, loaded by llama.cpp (node-llama-cpp 3.21.1, its prebuilt CPU build), against this
 * project's own forward pass (WebGPU, full-precision base + the fixture adapter, unmerged):
 *   (a) llama.cpp tokenises sample texts exactly as our tokenizer does;
 *   (b) next-token probabilities at the last position of two prompts from llama.cpp on the merged
 *       GGUF of each type equal ours: F32 within 1e-3 relative (‖p − q‖₂ / ‖p‖₂), the other types
 *       within the bounds below; the KL divergence KL(ours ‖ llama.cpp) of each type is printed;
 *   (c) the base GGUF plus the LoRA GGUF (llama.cpp's --lora, applied unmerged) equals the merged GGUF.
 * llama.cpp runs with flash attention off and an F32 KV cache: its flash-attention path rounds
 * through f16 (probabilities then differ by ~4e-4 even for F32 weights).
 */

const V = 151936;

/**
 * Relative-error bounds per type: F32 the 1e-3; the others about 2× to 5× what was measured
 * on this fixture (random weights, hidden 32; f32 1.5e-5, f16 1.8e-4, bf16 1.8e-3, q8_0 5.0e-3,
 * q4_k_m 2.1e-2, q4_0 5.5e-2), which comes from the weight rounding of each format plus llama.cpp's
 * own rounding of activations for non-F32 weights (f16 for F16, Q8_0 for the quantised types).
 * On the fixture q4_k_m is the Q5_0 + Q8_0 fallback mix (rows of 32 to 96, see gguf-model.ts).
 */
const BOUNDS: Record<GgufFileType, number> = { f32: 1e-3, f16: 1e-3, bf16: 5e-3, q8_0: 1.5e-2, q6_k: 3e-2, q4_0: 1.2e-1, q4_k_m: 5e-2 };
const TYPES: GgufFileType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_k_m'];

function softmax(logits: Float32Array, row: number): Float64Array {
  const p = new Float64Array(V);
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[row * V + i]);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp(logits[row * V + i] - max);
  for (let i = 0; i < V; i++) p[i] /= sum;
  return p;
}

function relError(p: Float64Array, q: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < V; i++) {
    num += (p[i] - q[i]) ** 2;
    den += p[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** KL(p ‖ q) in nats. */
function kl(p: Float64Array, q: Float64Array): number {
  let s = 0;
  for (let i = 0; i < V; i++) if (p[i] > 0) s += p[i] * Math.log(p[i] / Math.max(q[i], 1e-300));
  return s;
}

describe('exports loaded by llama.cpp', () => {
  let dir: string;
  let config: Qwen3Config;
  let adapter: HostLoraAdapter;
  let tok: QwenTokenizer;
  let ggufTok: GgufTokenizer;
  let llama: Llama;
  /** Token ids of the prompts, and our next-token probabilities at their last position. */
  let prompts: number[][];
  let ours: Float64Array[];
  /** The merged F32 model, loaded once, and llama.cpp's probabilities per type. */
  let mergedF32: LlamaModel;
  const theirs = new Map<GgufFileType, Float64Array[]>();

  /** llama.cpp's next-token probabilities after each prompt. */
  async function llamaProbabilities(model: LlamaModel, lora?: string): Promise<Float64Array[]> {
    const ctx = await model.createContext({
      contextSize: 64,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
      threads: 2,
      ...(lora ? { lora: { adapters: [{ filePath: lora }] } } : {}),
    });
    try {
      const seq = ctx.getSequence();
      const out: Float64Array[] = [];
      for (const ids of prompts) {
        await seq.clearHistory();
        const input = ids.map((t, i) => (i === ids.length - 1 ? ([t, { generateNext: { probabilities: true } }] as [number, { generateNext: { probabilities: true } }]) : t));
        const res = await seq.controlledEvaluate(input);
        const probs = res[ids.length - 1]?.next.probabilities;
        if (!probs) throw new Error('llama.cpp returned no probabilities');
        // Renormalised in float64: llama.cpp sums 151936 exponentials in f32 (off by ~1e-5).
        const p = new Float64Array(V);
        let sum = 0;
        for (const [id, prob] of probs) sum += p[id] = prob;
        for (let i = 0; i < V; i++) p[i] /= sum;
        out.push(p);
      }
      return out;
    } finally {
      await ctx.dispose();
    }
  }

  async function withModel<T>(file: string, f: (m: LlamaModel) => Promise<T>): Promise<T> {
    const model = await llama.loadModel({ modelPath: join(dir, file) });
    try {
      return await f(model);
    } finally {
      await model.dispose();
    }
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'llama-cpp-'));
    config = await readQwen3Config(TINY_MODEL);
    adapter = await readPeftAdapter(TINY_ADAPTER, config);
    tok = await QwenTokenizer.load(TINY_MODEL);
    ggufTok = await readGgufTokenizer(tokenizerSourceDir(TINY_MODEL), config, tok.chatTemplate);

    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    try {
      for (const t of TYPES) await writeQwen3Gguf(join(dir, `merged-${t}.gguf`), merged, { fileType: t, name: 'tiny', tokenizer: ggufTok });
    } finally {
      await merged.close();
    }
    const base = await MergedWeights.open(TINY_MODEL);
    try {
      await writeQwen3Gguf(join(dir, 'base-f32.gguf'), base, { fileType: 'f32', name: 'tiny-base', tokenizer: ggufTok });
    } finally {
      await base.close();
    }
    await writeLoraGguf(join(dir, 'lora.gguf'), config, adapter, { name: 'tiny-lora' });

    // Two prompts: a chat turn rendered as in training, and plain text.
    prompts = [
      tok.encode(generationPrompt(tok, [{ role: 'system', content: DEFAULT_SYSTEM_PROMPT }, { role: 'user', content: `${DEFAULT_USER_PREFIX}a fox in the snow` }], false)),
      tok.encode('Slow dolly in on the studio at night, hard side light'),
    ];
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
    const gpuAdapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    ours = [];
    for (const ids of prompts) {
      const inputIds = Int32Array.from(ids);
      const r = await model.forward({ B: 1, T: ids.length, inputIds, labels: inputIds }, { adapter: gpuAdapter, logitsLast: true });
      ours.push(softmax(r.logitsLast!, 0));
    }
    llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    mergedF32 = await llama.loadModel({ modelPath: join(dir, 'merged-f32.gguf') });
  });

  afterAll(async () => {
    await mergedF32?.dispose();
    await llama?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('(a) llama.cpp tokenises sample texts as our tokenizer does', async () => {
    const texts = [
      'Hello world',
      '  leading spaces, tabs\tand\nnewlines\n\n',
      'Scene 1: Sarah sits frustrated at her desk staring at a blank canvas, 360-degree orbit around subject. minimalist noir psychological',
      'ünïcödé, 日本語のテキスト, emoji 🦊🎬 and numbers 1234567 3.14159',
      "don't won't it's I'M YOU'RE",
      '<think>\nreasoning\n</think>\n\nanswer',
      generationPrompt(tok, [{ role: 'system', content: DEFAULT_SYSTEM_PROMPT }, { role: 'user', content: 'a lighthouse' }], false),
    ];
    for (const text of texts) expect(mergedF32.tokenize(text, true), JSON.stringify(text)).toEqual(tok.encode(text));
    // Special tokens keep their ids, and are matched only as special tokens.
    expect(mergedF32.tokenize('<|im_start|><|im_end|><|endoftext|>', true)).toEqual([151644, 151645, 151643]);
    expect(mergedF32.tokenize('<|im_end|>', false)).not.toContain(151645);
  });

  it('(b) next-token probabilities of the merged GGUFs equal our forward of base + adapter', async () => {
    const rows: string[] = [];
    for (const t of TYPES) {
      const probs = t === 'f32' ? await llamaProbabilities(mergedF32) : await withModel(`merged-${t}.gguf`, (m) => llamaProbabilities(m));
      theirs.set(t, probs);
      const errs = probs.map((q, i) => relError(ours[i], q));
      const kls = probs.map((q, i) => kl(ours[i], q));
      rows.push(`  ${t.padEnd(7)} relative error ${Math.max(...errs).toExponential(2)} (bound ${BOUNDS[t].toExponential(1)})   KL ${Math.max(...kls).toExponential(2)} nats`);
      for (const e of errs) expect(e, `${t}: relative error of the probabilities`).toBeLessThanOrEqual(BOUNDS[t]);
    }
    console.log(`llama.cpp vs our forward, next-token probabilities (max over ${prompts.length} prompts):\n${rows.join('\n')}`);
  });

  it('(c) base GGUF + LoRA GGUF in llama.cpp equals the merged GGUF', async () => {
    const merged = theirs.get('f32') ?? (await llamaProbabilities(mergedF32));
    const [withLora, without] = await withModel('base-f32.gguf', async (m) => [await llamaProbabilities(m, join(dir, 'lora.gguf')), await llamaProbabilities(m)]);
    for (let i = 0; i < prompts.length; i++) {
      // f32 rounding of W + s·BA versus Wx + s·B(Ax): a few ulps.
      expect(relError(merged[i], withLora[i]), `prompt ${i}: base + LoRA vs merged`).toBeLessThanOrEqual(1e-5);
      // The adapter really changes the output.
      expect(relError(merged[i], without[i]), `prompt ${i}: base alone vs merged`).toBeGreaterThan(1e-3);
    }
  });
});
