import { ExportError } from '../errors.js';
import { PROJECTIONS, projectionPath, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { GGML_TYPES, type GgmlType } from './gguf-quants.js';
import { tokenizerMetadata, type GgufTokenizer } from './gguf-tokenizer.js';
import { gguf, GgufWriter, type GgufTensorDecl, type GgufValue } from './gguf-writer.js';
import type { WeightStream } from './merge.js';
import { encodeInOrder, QuantizePool, type NamedJob } from './quantize-pool.js';

/** Values per quantisation job: small enough that a projection spreads over every worker. */
const QUANTIZE_CHUNK_ELEMENTS = 1 << 20;

/**
 * A Qwen3 model as a GGUF file for llama.cpp / Ollama (architecture "qwen3"): metadata, tokenizer,
 * chat template and every tensor under llama.cpp's name, converted to the file type's mix.
 *
 * File types and the mix (what convert_hf_to_gguf.py --outtype and llama-quantize produce):
 *   f32, f16, bf16   2-D weights in that type; norms (1-D) F32
 *   q8_0             2-D weights Q8_0 (convert_hf_to_gguf --outtype q8_0), norms F32
 *   q4_0, q6_k       llama-quantize: 2-D weights in the type; the output matrix (token_embd when
 *                    tied) Q6_K
 *   q4_k_m           llama-quantize Q4_K_M: Q4_K; output / tied token_embd Q6_K; attn_v and
 *                    ffn_down Q6_K in layers i with i < n/8, i ≥ 7n/8 or (i − n/8) % 3 == 2
 * Rows that are not whole blocks follow llama-quantize's tensor_type_fallback (llama-quant.cpp):
 * Q4_K → Q5_0, Q6_K → Q8_0, and F16 when even 32 does not divide the row; for the output
 * matrix the 256-block types become Q8_0 directly. (The qwen3-tiny fixture's rows are 32, 64 and 96
 * wide, so its q4_k_m file is Q5_0 + Q8_0; Qwen3-4B's rows are multiples of 256.)
 */

export const GGUF_FILE_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m', 'q6_k'] as const;
export type GgufFileType = (typeof GGUF_FILE_TYPES)[number];

/** general.file_type (llama_ftype) of each file type. */
const FILE_TYPE_IDS: Record<GgufFileType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k_m: 15, q6_k: 18, bf16: 32 };
const DEFAULT_TYPE: Record<GgufFileType, GgmlType> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0', q4_k_m: 'Q4_K', q6_k: 'Q6_K' };

export function isGgufFileType(s: string): s is GgufFileType {
  return (GGUF_FILE_TYPES as readonly string[]).includes(s);
}

/** llama.cpp's name of each projection inside `blk.{i}.`. */
export const GGUF_PROJECTION_NAMES: Readonly<Record<Projection, string>> = Object.freeze({
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
});

/** One tensor of the GGUF: its llama.cpp name, the checkpoint tensor it comes from, ne and type. */
export interface GgufTensorPlan extends GgufTensorDecl {
  readonly source: string;
  readonly layer: number | undefined;
}

/** Checkpoint tensors in GGUF order with their llama.cpp names (no output.weight when tied). */
export function qwen3TensorNames(config: Qwen3Config): { source: string; name: string; layer: number | undefined }[] {
  const out: { source: string; name: string; layer: number | undefined }[] = [{ source: 'model.embed_tokens.weight', name: 'token_embd.weight', layer: undefined }];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const pre = `model.layers.${l}`;
    const add = (source: string, name: string): void => {
      out.push({ source, name: `blk.${l}.${name}.weight`, layer: l });
    };
    add(`${pre}.input_layernorm.weight`, 'attn_norm');
    for (const p of PROJECTIONS.slice(0, 4)) add(`${projectionPath(l, p)}.weight`, GGUF_PROJECTION_NAMES[p]);
    add(`${pre}.self_attn.q_norm.weight`, 'attn_q_norm');
    add(`${pre}.self_attn.k_norm.weight`, 'attn_k_norm');
    add(`${pre}.post_attention_layernorm.weight`, 'ffn_norm');
    for (const p of PROJECTIONS.slice(4)) add(`${projectionPath(l, p)}.weight`, GGUF_PROJECTION_NAMES[p]);
  }
  out.push({ source: 'model.norm.weight', name: 'output_norm.weight', layer: undefined });
  if (!config.tieWordEmbeddings) out.push({ source: 'lm_head.weight', name: 'output.weight', layer: undefined });
  return out;
}

/** llama-quant.cpp's use_more_bits: the layers Q4_K_M gives more bits. */
function useMoreBits(i: number, n: number): boolean {
  return i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;
}

/** llama-quant.cpp's tensor_type_fallback for rows of `ncols` elements. */
function fallback(type: GgmlType, ncols: number): GgmlType {
  if (ncols % GGML_TYPES[type].blockSize === 0) return type;
  const next: GgmlType = type === 'Q4_K' ? 'Q5_0' : type === 'Q6_K' ? 'Q8_0' : type;
  return ncols % GGML_TYPES[next].blockSize === 0 ? next : 'F16';
}

/** The ggml type of one tensor in a file of `fileType` (see the module comment). */
export function chooseTensorType(fileType: GgufFileType, name: string, ne: readonly number[], layer: number | undefined, nLayers: number, tied: boolean): GgmlType {
  if (ne.length === 1) return 'F32';
  const base = DEFAULT_TYPE[fileType];
  if (fileType === 'f32' || fileType === 'f16' || fileType === 'bf16') return base;
  if (fileType === 'q8_0') return fallback(base, ne[0]);
  let type = base;
  if (name === 'output.weight' || (tied && name === 'token_embd.weight')) {
    type = ne[0] % GGML_TYPES[base].blockSize !== 0 ? 'Q8_0' : base !== 'Q8_0' ? 'Q6_K' : base;
  } else if (fileType === 'q4_k_m' && layer !== undefined && (name.endsWith('.attn_v.weight') || name.endsWith('.ffn_down.weight')) && useMoreBits(layer, nLayers)) {
    type = 'Q6_K';
  }
  return fallback(type, ne[0]);
}

/** The GGUF's key/value pairs for a Qwen3 model. */
export function qwen3Metadata(config: Qwen3Config, name: string, fileType: GgufFileType, tokenizer: GgufTokenizer): [string, GgufValue][] {
  const quantized = !['f32', 'f16', 'bf16'].includes(fileType);
  return [
    ['general.architecture', gguf.str('qwen3')],
    ['general.type', gguf.str('model')],
    ['general.name', gguf.str(name)],
    ['general.file_type', gguf.u32(FILE_TYPE_IDS[fileType])],
    ...(quantized ? [['general.quantization_version', gguf.u32(2)] as [string, GgufValue]] : []),
    ['qwen3.block_count', gguf.u32(config.numHiddenLayers)],
    ['qwen3.context_length', gguf.u32(config.maxPositionEmbeddings)],
    ['qwen3.embedding_length', gguf.u32(config.hiddenSize)],
    ['qwen3.feed_forward_length', gguf.u32(config.intermediateSize)],
    ['qwen3.attention.head_count', gguf.u32(config.numAttentionHeads)],
    ['qwen3.attention.head_count_kv', gguf.u32(config.numKeyValueHeads)],
    ['qwen3.attention.key_length', gguf.u32(config.headDim)],
    ['qwen3.attention.value_length', gguf.u32(config.headDim)],
    ['qwen3.rope.freq_base', gguf.f32(config.ropeTheta)],
    ['qwen3.attention.layer_norm_rms_epsilon', gguf.f32(config.rmsNormEps)],
    ...tokenizerMetadata(tokenizer),
  ];
}

/** Every tensor of the file with its ne (HF shape reversed) and type. */
export function planQwen3Tensors(config: Qwen3Config, fileType: GgufFileType, shapeOf: (source: string) => readonly number[]): GgufTensorPlan[] {
  return qwen3TensorNames(config).map(({ source, name, layer }) => {
    const ne = [...shapeOf(source)].reverse();
    return { source, name, layer, ne, type: chooseTensorType(fileType, name, ne, layer, config.numHiddenLayers, config.tieWordEmbeddings) };
  });
}

export interface Qwen3GgufOptions {
  readonly fileType: GgufFileType;
  /** Encodes the chunks (default: a pool of its own, closed at the end). */
  readonly pool?: QuantizePool;
  /** general.name */
  readonly name: string;
  readonly tokenizer: GgufTokenizer;
  /** Called after each tensor is written. */
  readonly onTensor?: (t: GgufTensorPlan, done: number, total: number) => void;
}

/** Planned size of the file in bytes. */
export function qwen3GgufBytes(weights: WeightStream, options: Qwen3GgufOptions): number {
  const tensors = planQwen3Tensors(weights.config, options.fileType, (s) => weights.info(s).shape);
  return GgufWriter.plannedBytes(qwen3Metadata(weights.config, options.name, options.fileType, options.tokenizer), tensors);
}

/**
 * Writes the GGUF at `path` (temporary name, renamed when complete), streaming each tensor in row
 * chunks: f32 values from `weights` (merged or not), converted to the tensor's type. Returns the
 * tensors as written.
 */
export async function writeQwen3Gguf(path: string, weights: WeightStream, options: Qwen3GgufOptions): Promise<GgufTensorPlan[]> {
  const config = weights.config;
  if (options.tokenizer.tokens.length !== config.vocabSize) {
    throw new ExportError(`${path}: the tokenizer lists ${options.tokenizer.tokens.length} tokens but the model has vocab_size ${config.vocabSize}`);
  }
  const tensors = planQwen3Tensors(config, options.fileType, (s) => weights.info(s).shape);
  const writer = await GgufWriter.create(path, qwen3Metadata(config, options.name, options.fileType, options.tokenizer), tensors);
  const pool = options.pool ?? QuantizePool.create();
  try {
    async function* jobs(): AsyncGenerator<NamedJob> {
      for (const t of tensors) {
        for await (const c of weights.chunks(t.source, QUANTIZE_CHUNK_ELEMENTS, { deferDelta: true })) {
          yield { name: t.name, job: { type: t.type, values: c.values, nPerRow: t.ne[0], delta: c.delta, where: `${path}: ${t.name}` } };
        }
      }
    }
    let done = 0;
    await encodeInOrder(pool, jobs(), async (name, bytes) => {
      await writer.write(name, bytes);
      if (writer.completed > done) {
        done = writer.completed;
        options.onTensor?.(tensors[done - 1], done, tensors.length);
      }
    });
    await writer.finish();
    return tensors;
  } finally {
    if (!options.pool) await pool.close();
    await writer.abort();
  }
}
