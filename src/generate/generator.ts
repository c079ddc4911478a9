import { ConfigError, ShapeError } from '../errors.js';
import { AttentionDecode } from '../kernels/attention-decode.js';
import type { Gpu } from '../kernels/gpu.js';
import { checkWeight, type StoredFormat } from '../kernels/matmul.js';
import { Matvec } from '../kernels/matvec.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Qwen3Model } from '../model/qwen3.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import type { PlanBuffer } from '../model/buffer-plan.js';
import { ChunkProgram } from './chunk-program.js';
import { KvCache } from './kv-cache.js';
import { inputTokens, type ChatOptions, type GenerationInput } from './prompt.js';
import { SamplerRng } from './rng.js';
import { DEFAULT_SAMPLING, Sampler, type SamplingOptions } from './sampling.js';
import { TextStream } from './text-stream.js';
import { SEED_PARAMETERS } from '../config/sampling-parameters.js';

/**
 * Text generation with a KV cache on the GPU, the LoRA adapter applied unmerged on the NF4 or
 * full-precision base:
 *
 *   const gen = await Generator.create(gpu, model, { adapter, maxContext: 1024 });
 *   const r = await gen.generate({ messages: [{ role: 'user', content: '…' }] }, { temperature: 0 }, (t) => process.stdout.write(t));
 *   gen.destroy();
 *
 * The prompt goes through the prefill program in chunks of `prefillChunk` tokens (one submit
 * each, only the last read back), then each new token through the decode program (one token per
 * step: one small buffer write, one submit, one readback of the V logits). Sampling runs on the
 * host in float64 (sampling.ts). Everything GPU-side is allocated by `create`.
 *
 * Why the logits come back whole rather than sampled on the GPU: the readback is V f32 (0.6 MB for
 * Qwen3's 151,936 tokens, tens of µs over PCIe) and host sampling takes 0.4 ms (greedy) to 1 ms
 * (the Modelfile's top_k 20 / top_p 0.9 / repeat penalty) per token in Node; in exchange the
 * sampler is exact float64 with llama.cpp's semantics and testable against a reference. On the
 * lavapipe test machine a decode step of the fixture model took 25 ms, 23 of them on the "GPU".
 * One generation at a time per Generator (the cache holds one sequence).
 */
export interface GeneratorOptions {
  readonly adapter?: LoraAdapter;
  /** Tokens (prompt + generated) the KV cache holds; default min(2048, max_position_embeddings). */
  readonly maxContext?: number;
  /** Prompt tokens per prefill step; default 128 (at most maxContext). */
  readonly prefillChunk?: number;
  /** Tokenizer of text and chat input; default the bundled Qwen3 tokenizer. */
  readonly tokenizer?: QwenTokenizer;
}

export interface GenerateOptions extends Partial<SamplingOptions>, ChatOptions {
  /** Most tokens to generate; default 120 (the Modelfile's num_predict). */
  readonly maxNewTokens?: number;
  /** Stop strings: the text ends before the first one generated. */
  readonly stop?: readonly string[];
  /** Seed of the sampler's generator; default one derived from the clock (returned in the result). */
  readonly seed?: number;
  /** Token ids that end generation besides the tokenizer's end-of-sequence tokens. */
  readonly stopTokens?: readonly number[];
}

/** Why generation ended. */
export type StopReason = 'eos' | 'stop' | 'length' | 'context';

export interface GenerationResult {
  /** Generated text (without the end-of-sequence token and without the stop string). */
  readonly text: string;
  /** Generated token ids (the end-of-sequence token not included; a stop string's tokens are). */
  readonly tokens: number[];
  readonly stopReason: StopReason;
  readonly promptTokens: number;
  /** Wall time of the whole call, and of the prefill (prompt in, first logits out). */
  readonly seconds: number;
  readonly prefillSeconds: number;
  /** Generated tokens per second of the whole call. */
  readonly tokensPerSecond: number;
  /** Decode steps per second after the prefill (NaN when there were none). */
  readonly decodeTokensPerSecond: number;
  readonly seed: number;
}

export const DEFAULT_PREFILL_CHUNK = 128;
export const DEFAULT_MAX_CONTEXT = 2048;

export class Generator {
  /** Tokens whose keys and values are in the cache. */
  private position = 0;
  /** A generate call is running (one sequence at a time: the cache holds one). */
  private busy = false;

  private constructor(
    readonly tokenizer: QwenTokenizer,
    readonly cache: KvCache,
    readonly prefillProgram: ChunkProgram,
    readonly decodeProgram: ChunkProgram,
    readonly vocab: number,
    /** Token ids that end generation. */
    readonly eosTokens: ReadonlySet<number>,
  ) {}

  static async create(gpu: Gpu, model: Qwen3Model, options: GeneratorOptions = {}): Promise<Generator> {
    const c = model.config;
    const maxContext = options.maxContext ?? Math.min(DEFAULT_MAX_CONTEXT, c.maxPositionEmbeddings);
    const prefillChunk = Math.min(options.prefillChunk ?? DEFAULT_PREFILL_CHUNK, maxContext);
    if (!Number.isInteger(prefillChunk) || prefillChunk < 1) throw new ConfigError(`Generator: prefillChunk must be a whole number ≥ 1, got ${options.prefillChunk}`);
    if (c.numAttentionHeads % c.numKeyValueHeads !== 0) {
      throw new ShapeError(`Generator: ${c.numAttentionHeads} query heads are not a multiple of ${c.numKeyValueHeads} key/value heads (config.json)`);
    }
    const tokenizer = options.tokenizer ?? (await QwenTokenizer.load());
    const groupSize = c.numAttentionHeads / c.numKeyValueHeads;
    const w = model.weights;
    const formats: StoredFormat[] = [...Object.values(w.layers[0].proj), w.lmHead].map((x) => checkWeight('Generator', x));
    if (options.adapter) formats.push('f32');
    const [prefillAttention, decodeAttention, matvec] = await Promise.all([
      AttentionDecode.create(gpu, { headDim: c.headDim, groupSize, rows: prefillChunk }),
      AttentionDecode.create(gpu, { headDim: c.headDim, groupSize, rows: 1 }),
      Matvec.create(gpu, { rows: 1, formats }),
    ]);
    const cache = KvCache.create(gpu, c, maxContext);
    const spec = { kernels: model.kernels, weights: model.weights, adapter: options.adapter, cache };
    let prefill: ChunkProgram | undefined;
    try {
      prefill = ChunkProgram.build(gpu, { ...spec, attention: prefillAttention, matvec, rows: prefillChunk });
      const decode = ChunkProgram.build(gpu, { ...spec, attention: decodeAttention, matvec, rows: 1 });
      const eos = [tokenizer.eosTokenId, tokenizer.tokenToId('<|im_end|>'), tokenizer.tokenToId('<|endoftext|>')];
      return new Generator(tokenizer, cache, prefill, decode, c.vocabSize, new Set(eos.filter((id): id is number => id !== undefined && id < c.vocabSize)));
    } catch (e) {
      prefill?.destroy();
      cache.destroy();
      throw e;
    }
  }

  get maxContext(): number {
    return this.cache.maxContext;
  }

  /** Every buffer this Generator allocated, from the plans: the KV cache's, the prefill and decode programs'. */
  get plan(): readonly PlanBuffer[] {
    return [...this.cache.plan, ...this.prefillProgram.plan, ...this.decodeProgram.plan];
  }

  get prefillChunk(): number {
    return this.prefillProgram.rows;
  }

  /** Token ids of `input` (chat input rendered with the training template). */
  tokenize(input: GenerationInput, options: ChatOptions = {}): number[] {
    return inputTokens(this.tokenizer, input, this.vocab, options);
  }

  /**
   * Starts a new sequence: runs `tokens` through the model in prefill chunks, filling the cache,
   * and returns the logits (V) after the last of them. The array is reused by the next prefill.
   */
  async prefill(tokens: readonly number[]): Promise<Float32Array> {
    if (tokens.length < 1) throw new ConfigError('Generator.prefill: no tokens');
    if (tokens.length > this.maxContext) {
      throw new ConfigError(`generate: the prompt has ${tokens.length} tokens, more than the context of ${this.maxContext}; shorten it or raise maxContext`);
    }
    this.position = 0;
    const C = this.prefillProgram.rows;
    for (let p0 = 0; p0 < tokens.length; p0 += C) {
      const piece = tokens.slice(p0, p0 + C);
      this.prefillProgram.submit(piece, p0, p0 + C >= tokens.length);
      this.position = p0 + piece.length;
    }
    return this.prefillProgram.readLogits();
  }

  /** Appends one token to the sequence and returns the logits (V) after it (the array is reused by the next step). */
  async append(token: number): Promise<Float32Array> {
    if (this.position === 0) throw new ConfigError('Generator.append: no sequence; call prefill first');
    if (this.position >= this.maxContext) throw new ConfigError(`Generator.append: the context of ${this.maxContext} tokens is full`);
    const logits = await this.decodeProgram.run([token], this.position);
    this.position++;
    return logits;
  }

  /** Tokens in the current sequence. */
  get length(): number {
    return this.position;
  }

  /** Generates a continuation of `input`; `onText` receives the text as it becomes final. */
  async generate(input: GenerationInput, options: GenerateOptions = {}, onText?: (text: string) => void): Promise<GenerationResult> {
    if (this.busy) throw new ConfigError('Generator.generate: another generation is running on this Generator; await it first (the KV cache holds one sequence)');
    this.busy = true;
    try {
      return await this.run(input, options, onText);
    } finally {
      this.busy = false;
    }
  }

  private async run(input: GenerationInput, options: GenerateOptions, onText: ((text: string) => void) | undefined): Promise<GenerationResult> {
    const t0 = performance.now();
    const maxNewTokens = options.maxNewTokens ?? SEED_PARAMETERS.num_predict;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new ConfigError(`generate: max_new_tokens = ${maxNewTokens}; expected a whole number ≥ 1`);
    const seed = options.seed ?? Math.floor(Date.now() % 2 ** 32);
    if (!Number.isInteger(seed)) throw new ConfigError(`generate: seed = ${seed}; expected a whole number`);
    const sampling: SamplingOptions = {
      temperature: options.temperature ?? DEFAULT_SAMPLING.temperature,
      topK: options.topK ?? DEFAULT_SAMPLING.topK,
      topP: options.topP ?? DEFAULT_SAMPLING.topP,
      repeatPenalty: options.repeatPenalty ?? DEFAULT_SAMPLING.repeatPenalty,
      repeatLastN: options.repeatLastN ?? DEFAULT_SAMPLING.repeatLastN,
    };
    const sampler = new Sampler(this.vocab, sampling, new SamplerRng(seed));
    const stopTokens = new Set([...this.eosTokens, ...(options.stopTokens ?? [])]);
    const stream = new TextStream((ids) => this.tokenizer.decode(ids), options.stop ?? []);
    const prompt = this.tokenize(input, options);

    let logits = await this.prefill(prompt);
    const tPrefill = performance.now();
    const history = [...prompt];
    const tokens: number[] = [];
    let stopReason: StopReason = 'length';
    let decodeSteps = 0;
    for (;;) {
      const next = sampler.sample(logits, history);
      if (stopTokens.has(next)) {
        stopReason = 'eos';
        break;
      }
      tokens.push(next);
      history.push(next);
      const piece = stream.push(next);
      if (piece !== '') onText?.(piece);
      if (stream.stopped) {
        stopReason = 'stop';
        break;
      }
      if (tokens.length >= maxNewTokens) break;
      if (this.position >= this.maxContext) {
        stopReason = 'context';
        break;
      }
      logits = await this.append(next);
      decodeSteps++;
    }
    const rest = stream.flush();
    if (rest !== '') onText?.(rest);
    const t1 = performance.now();
    const seconds = (t1 - t0) / 1000;
    const decodeSeconds = (t1 - tPrefill) / 1000;
    return {
      text: stream.text,
      tokens,
      stopReason,
      promptTokens: prompt.length,
      seconds,
      prefillSeconds: (tPrefill - t0) / 1000,
      tokensPerSecond: tokens.length / seconds,
      decodeTokensPerSecond: decodeSteps > 0 ? decodeSteps / decodeSeconds : NaN,
      seed,
    };
  }

  /** Frees the cache and the programs' buffers (the model and adapter stay). */
  destroy(): void {
    this.prefillProgram.destroy();
    this.decodeProgram.destroy();
    this.cache.destroy();
  }
}
