import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type ControlledEvaluateInputItem, type Llama, type LlamaModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { generationPrompt } from '../../src/data/render.js';
import { writeQwen3Gguf, type GgufFileType, type GgufTensorPlan } from '../../src/export/gguf-model.js';
import { dequantizeRows, quantizeRows } from '../../src/export/gguf-quants.js';
import { writeLoraGguf } from '../../src/export/gguf-lora.js';
import { readGgufTokenizer, type GgufTokenizer } from '../../src/export/gguf-tokenizer.js';
import { MergedWeights, type WeightStream } from '../../src/export/merge.js';
import { readPeftAdapter, type HostLoraAdapter } from '../../src/model/peft.js';
import { tokenizerSourceDir } from '../../src/export/tokenizer-files.js';
import { readQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';
import { expectedQwen3Shapes, PROJECTIONS, projectionShape, type Projection } from '../../src/model/checkpoint.js';
import { parseQwen3Config } from '../../src/model/config.js';
import { f32ToBf16Array } from '../../src/model/bf16.js';
import { SafetensorsWriter } from '../../src/model/safetensors-writer.js';
import { savePeftAdapter } from '../../src/model/peft.js';
import { TOKEN_TYPE } from '../../src/export/gguf-tokenizer.js';

/**
 * The exports, loaded by llama.cpp (node-llama-cpp 3.21.1, its prebuilt CPU build), against this
 * project's own forward pass (WebGPU, full-precision base + the fixture adapter, unmerged):
 *   (a) llama.cpp tokenises sample texts exactly as our tokenizer does;
 *   (b) next-token probabilities at the last position of two prompts from llama.cpp on the merged
 *       GGUF of each type equal ours: F32 within 1e-3 relative (‖p − q‖₂ / ‖p‖₂), the other types
 *       within the bounds below; the KL divergence KL(ours ‖ llama.cpp) of each type is printed;
 *   (c) the base GGUF plus the LoRA GGUF (llama.cpp's --lora, applied unmerged) equals the merged GGUF;
 *   (d) real Q4_K / Q6_K blocks (the fixture's rows are too short for them) on a synthetic model with
 *       rows of 256 and 512: llama.cpp reads them as the values our dequantiser gives.
 * llama.cpp runs with flash attention off and an F32 KV cache: its flash-attention path rounds
 * through f16 (probabilities then differ by ~4e-4 even for F32 weights).
 */

const V = 151936;

/**
 * Relative-error bounds per type: F32 the 1e-3; the others 4× to 6× what was measured on
 * this fixture (random weights, hidden 32; f32 9.5e-8, f16 1.8e-4, bf16 1.8e-3, q8_0 5.0e-3,
 * q4_k_m 2.1e-2; KL 7e-15, 2e-8, 2e-6, 1e-5, 2e-4 nats), which comes from the weight rounding of
 * each format plus llama.cpp's own rounding of activations for non-F32 weights (f16 for F16, Q8_0
 * for the quantised types). On the fixture q4_k_m is the Q5_0 + Q8_0 fallback mix (its rows are
 * 32 to 96 wide, see gguf-model.ts); the K-quant blocks themselves are checked byte for byte
 * against llama.cpp's quantiser in gguf-quants.test.ts.
 */
const BOUNDS: Record<GgufFileType, number> = { f32: 1e-3, f16: 1e-3, bf16: 1e-2, q8_0: 2e-2, q6_k: 3e-2, q4_0: 1.2e-1, q4_k_m: 1e-1 };
const TYPES: GgufFileType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_k_m'];
const QUANTISED = new Set<GgufFileType>(['q8_0', 'q4_k_m']);

/**
 * Whether llama.cpp's CPU backend runs quantised matmuls on Intel AMX here: the prebuilt
 * node-llama-cpp binaries load their `sapphirerapids` variant on a CPU with amx_int8, whose AMX
 * kernels are far less accurate on this fixture's 32- to 96-wide rows (measured on such a CPU,
 * 2026-12-02: q8_0 2.0e-1 and q4_k_m 1.0e-1 relative error where the other variants give 5.0e-3
 * and 2.1e-2, with the same GGUF files; f32/f16/bf16 unchanged). That is llama.cpp's arithmetic, not
 * our files: there (b) prints the quantised types without holding them to the bound, and (d)
 * checks the same formats on rows of 256 and 512, where the AMX kernels agree.
 */
function llamaUsesAmx(): boolean {
  try {
    return /^flags\s*:.*\bamx_int8\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

function softmax(logits: Float32Array, row: number): Float64Array {
  const p = new Float64Array(V);
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[row * V + i]);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp(logits[row * V + i] - max);
  for (let i = 0; i < V; i++) p[i] /= sum;
  return p;
}

function softmaxRow(logits: Float32Array, n: number): Float64Array {
  const p = new Float64Array(n);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[i] - max);
  return p.map((v) => v / sum);
}

function relErrorN(p: Float64Array, q: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < p.length; i++) {
    num += (p[i] - q[i]) ** 2;
    den += p[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function klN(p: Float64Array, q: Float64Array): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) s += p[i] * Math.log(p[i] / Math.max(q[i], 1e-300));
  return s;
}

/** `w` with every tensor replaced by its quantise → dequantise round trip in the plan's type. */
function roundTripped(w: WeightStream, plan: readonly GgufTensorPlan[]): WeightStream {
  const typeOf = new Map(plan.map((t) => [t.source, t]));
  return {
    config: w.config,
    dir: w.dir,
    names: () => w.names(),
    info: (name) => w.info(name),
    async *chunks(name, maxElements) {
      const t = typeOf.get(name)!;
      for await (const c of w.chunks(name, maxElements)) {
        yield { ...c, values: dequantizeRows(t.type, quantizeRows(t.type, c.values, t.ne[0]), c.values.length) };
      }
    },
  };
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
        const input = ids.map((t, i) => (i === ids.length - 1 ? [t, { generateNext: { probabilities: true } }] : t)) as ControlledEvaluateInputItem[];
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
      if (QUANTISED.has(t) && llamaUsesAmx()) {
        rows.push(`  ${t.padEnd(7)} not held to its bound: llama.cpp runs its AMX kernels on this CPU (see llamaUsesAmx; (d) checks ${t === 'q8_0' ? 'Q8_0' : 'Q4_K / Q6_K'} blocks on 256- and 512-wide rows)`);
        continue;
      }
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

  it('(d) K-quants and Q8_0: a synthetic Qwen3 with rows of 256 and 512 (real Q4_K / Q6_K / Q8_0 blocks) in llama.cpp vs our forward', async () => {
    // hidden 256, MLP 512, 2 layers, 2 heads of 128 (1 KV head), a 512-token byte-level vocabulary.
    const cfg = parseQwen3Config(
      {
        model_type: 'qwen3', hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1,
        head_dim: 128, vocab_size: 512, rope_theta: 1000000, rms_norm_eps: 1e-6, tie_word_embeddings: true, max_position_embeddings: 4096,
      },
      'synthetic config',
    );
    const model = join(dir, 'synthetic');
    mkdirSync(model);
    writeFileSync(join(model, 'config.json'), JSON.stringify(cfg.raw));
    const rng = new Rng(2024);
    const shapes = expectedQwen3Shapes(cfg);
    const names = [...shapes.keys()].sort();
    const w = await SafetensorsWriter.create(join(model, 'model.safetensors'), names.map((n) => ({ name: n, dtype: 'BF16' as const, shape: shapes.get(n)! })));
    for (const n of names) {
      const shape = shapes.get(n)!;
      const count = shape.reduce((a, d) => a * d, 1);
      const values = shape.length === 1 ? Float32Array.from({ length: count }, () => 1 + 0.1 * rng.normal()) : rng.f32(count, n.includes('embed') ? 0.1 : 0.3 / Math.sqrt(shape[1]));
      await w.write(n, f32ToBf16Array(values));
    }
    await w.finish();
    // A random rank-4 adapter on every projection, saved and read back as an export would.
    const layers = Array.from({ length: 2 }, () =>
      Object.fromEntries(PROJECTIONS.map((p) => { const [o, k] = projectionShape(cfg, p); return [p, { a: rng.f32(4 * k, 0.1), b: rng.f32(o * 4, 0.1) }]; })),
    );
    const adapterDir = join(dir, 'synthetic-adapter');
    await savePeftAdapter(adapterDir, {
      config: { r: 4, alpha: 8, dropout: 0, targetModules: [...PROJECTIONS], useRslora: false },
      scale: 2,
      layers,
      shapes: Object.fromEntries(PROJECTIONS.map((p) => [p, projectionShape(cfg, p)])) as Record<Projection, readonly [number, number]>,
    });
    const synthAdapter = await readPeftAdapter(adapterDir, cfg);
    // GPT-2's byte-to-unicode alphabet as 256 single-byte tokens, then padding; no merges.
    const bytes: string[] = [];
    for (let b = 0, n = 0; b < 256; b++) {
      const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      bytes.push(String.fromCodePoint(printable ? b : 256 + n++));
    }
    const tokens = [...bytes, ...Array.from({ length: 256 }, (_, i) => `[PAD${256 + i}]`)];
    const synthTok: GgufTokenizer = {
      tokens, tokenTypes: tokens.map((_, i) => (i < 256 ? TOKEN_TYPE.NORMAL : TOKEN_TYPE.UNUSED)), merges: [], bosId: 0, eosId: 1, padId: 0, addBos: false, chatTemplate: '',
    };
    const merged = await MergedWeights.open(model, synthAdapter);
    const plans = new Map<string, GgufTensorPlan[]>();
    try {
      for (const t of ['f32', 'q4_k_m', 'q6_k', 'q8_0'] as const) {
        plans.set(t, await writeQwen3Gguf(join(dir, `synthetic-${t}.gguf`), merged, { fileType: t, name: 'synthetic', tokenizer: synthTok }));
        if (t === 'f32') continue;
        // The same weights after our own quantise → dequantise round trip, written as F32.
        await writeQwen3Gguf(join(dir, `synthetic-${t}-roundtrip.gguf`), roundTripped(merged, plans.get(t)!), { fileType: 'f32', name: 'synthetic', tokenizer: synthTok });
      }
    } finally {
      await merged.close();
    }
    expect(new Set(plans.get('q4_k_m')!.map((t) => t.type))).toEqual(new Set(['F32', 'Q4_K', 'Q6_K']));
    expect(new Set(plans.get('q6_k')!.map((t) => t.type))).toEqual(new Set(['F32', 'Q6_K']));
    expect(new Set(plans.get('q8_0')!.map((t) => t.type))).toEqual(new Set(['F32', 'Q8_0']));

    const ids = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 65, 66];
    const probsOf = (file: string) =>
      withModel(file, async (m) => {
        const ctx = await m.createContext({ contextSize: 64, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', threads: 2 });
        try {
          const input = ids.map((id, i) => (i === ids.length - 1 ? [id, { generateNext: { probabilities: true } }] : id)) as ControlledEvaluateInputItem[];
          const res = await ctx.getSequence().controlledEvaluate(input);
          const out = new Float64Array(cfg.vocabSize);
          let sum = 0;
          for (const [id, prob] of res[ids.length - 1]!.next.probabilities!) sum += out[id] = prob;
          return out.map((v) => v / sum);
        } finally {
          await ctx.dispose();
        }
      });
    const gpu = await testGpu();
    const ourModel = await Qwen3Model.load(gpu, model, { base: 'full' });
    const gpuAdapter = await loadLoraAdapter(gpu, adapterDir, cfg);
    const inputIds = Int32Array.from(ids);
    const r = await ourModel.forward({ B: 1, T: ids.length, inputIds, labels: inputIds }, { adapter: gpuAdapter, logitsLast: true });
    const p = softmaxRow(r.logitsLast!, cfg.vocabSize);
    const f32 = await probsOf('synthetic-f32.gguf');
    const rows = [`  f32     relative error ${relErrorN(p, f32).toExponential(2)} vs our forward`];
    // F32: the 1e-3.
    expect(relErrorN(p, f32), 'synthetic f32 vs our forward').toBeLessThanOrEqual(1e-3);
    for (const t of ['q6_k', 'q4_k_m', 'q8_0'] as const) {
      const q = await probsOf(`synthetic-${t}.gguf`);
      const ref = await probsOf(`synthetic-${t}-roundtrip.gguf`);
      rows.push(`  ${t.padEnd(7)} relative error ${relErrorN(p, q).toExponential(2)} vs our forward (KL ${klN(p, q).toExponential(2)} nats); ${relErrorN(ref, q).toExponential(2)} vs llama.cpp on our dequantised weights`);
      // llama.cpp decodes our blocks to the values we meant: what is left is its Q8_K rounding of
      // the activations (measured 1.5e-2 for q6_k, 1.7e-2 for q4_k_m), against 7e-2 and 4e-1 for
      // the weight rounding itself on this random model (printed as the error vs our forward);
      // q8_0 here also stands for (b)'s quantised types on CPUs with AMX (see llamaUsesAmx).
      expect(relErrorN(ref, q), `synthetic ${t}: llama.cpp on the ${t} file vs on its dequantised weights`).toBeLessThanOrEqual(5e-2);
    }
    console.log(`synthetic model (real Q4_K / Q6_K blocks), llama.cpp:\n${rows.join('\n')}`);
  });
});
