import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CheckpointError } from '../errors.js';

/**
 * The Hugging Face `config.json` of a Qwen3 checkpoint, validated and in camelCase. Both the
 * transformers-4 layout (top-level `rope_theta`, `torch_dtype`) and the transformers-5 layout
 * (`rope_parameters: {rope_theta, rope_type}`, `dtype`) are accepted. Anything this trainer does not
 * implement (RoPE scaling, attention bias, sliding windows, another architecture, a pre-quantised
 * checkpoint) is refused with a CheckpointError naming config.json, the key, what was found and what
 * is supported. Unknown extra keys are ignored: HF configs carry many that do not change the math.
 * Defaults for absent optional keys are those of transformers' Qwen3Config.
 */
export interface Qwen3Config {
  /** D, residual stream width. */
  readonly hiddenSize: number;
  /** F, MLP width. */
  readonly intermediateSize: number;
  /** L, decoder layers. */
  readonly numHiddenLayers: number;
  /** H, query heads. */
  readonly numAttentionHeads: number;
  /** Hkv, key/value heads; H % Hkv == 0. */
  readonly numKeyValueHeads: number;
  /** Dh, head dimension (config `head_dim`, else D / H). */
  readonly headDim: number;
  /** V, vocabulary size (rows of embed_tokens). */
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  /** lm_head shares model.embed_tokens.weight (no lm_head.weight tensor). */
  readonly tieWordEmbeddings: boolean;
  readonly maxPositionEmbeddings: number;
  /** `dtype` (transformers 5) or `torch_dtype` (transformers 4), e.g. "bfloat16"; null when absent. */
  readonly torchDtype: string | null;
  readonly bosTokenId: number | null;
  /** `eos_token_id` as a list (it may be one id or several); empty when absent. */
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number | null;
  /** The parsed config.json as found (deep-frozen copy), for writing back at export. */
  readonly raw: Readonly<Record<string, unknown>>;
}

const posInt = z.int().positive();
const tokenId = z.int().nonnegative();

/** Each typed key: its schema and, for the error message, what is expected. */
const FIELDS = {
  hidden_size: [posInt, 'a positive integer'],
  intermediate_size: [posInt, 'a positive integer'],
  num_hidden_layers: [posInt, 'a positive integer'],
  num_attention_heads: [posInt, 'a positive integer'],
  num_key_value_heads: [posInt.nullish(), 'a positive integer (or absent: equal to num_attention_heads)'],
  head_dim: [posInt.nullish(), 'a positive integer (or absent: hidden_size / num_attention_heads)'],
  vocab_size: [posInt, 'a positive integer'],
  rms_norm_eps: [z.number().positive().optional(), 'a positive number'],
  rope_theta: [z.number().positive().nullish(), 'a positive number'],
  rope_parameters: [z.looseObject({ rope_theta: z.number().positive().optional(), rope_type: z.string().optional() }).nullish(), 'an object {rope_theta: positive number, rope_type: string}'],
  tie_word_embeddings: [z.boolean().optional(), 'true or false'],
  max_position_embeddings: [posInt.optional(), 'a positive integer'],
  torch_dtype: [z.string().nullish(), 'a dtype name such as "bfloat16"'],
  dtype: [z.string().nullish(), 'a dtype name such as "bfloat16"'],
  bos_token_id: [tokenId.nullish(), 'a token id or null'],
  eos_token_id: [z.union([tokenId, z.array(tokenId)]).nullish(), 'a token id, a list of token ids, or null'],
  pad_token_id: [tokenId.nullish(), 'a token id or null'],
  hidden_act: [z.string().optional(), 'an activation name'],
  attention_bias: [z.boolean().optional(), 'true or false'],
  use_sliding_window: [z.boolean().optional(), 'true or false'],
  layer_types: [z.array(z.string()).nullish(), 'a list of layer type names'],
  architectures: [z.array(z.string()).nullish(), 'a list of architecture names'],
} as const;

type FieldKey = keyof typeof FIELDS;
const RawConfigSchema = z.looseObject(
  Object.fromEntries(Object.entries(FIELDS).map(([k, [schema]]) => [k, schema])) as { [K in FieldKey]: (typeof FIELDS)[K][0] },
);

/** Reads and validates `<dir>/config.json`. */
export async function readQwen3Config(dir: string): Promise<Qwen3Config> {
  const path = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read the model's config.json (${(e as Error).message}); a Hugging Face model folder needs one`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  return parseQwen3Config(json, path);
}

/** Validates a parsed config.json; `where` (normally the file's path) starts every error message. */
export function parseQwen3Config(json: unknown, where: string): Qwen3Config {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new CheckpointError(`${where}: config.json must hold a JSON object, found ${show(json)}`);
  }
  const obj = json as Record<string, unknown>;

  // Architecture first: another model's config would otherwise fail on some field with a less useful message.
  if (obj.model_type !== 'qwen3') {
    throw refuse(where, 'model_type', obj.model_type, '"qwen3" (this trainer implements the Qwen3 architecture only)');
  }
  const arch = obj.architectures;
  if (arch !== undefined && arch !== null && !(Array.isArray(arch) && arch.length === 1 && arch[0] === 'Qwen3ForCausalLM')) {
    throw refuse(where, 'architectures', arch, '["Qwen3ForCausalLM"]');
  }

  const parsed = RawConfigSchema.safeParse(obj);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = String(issue.path[0]) as FieldKey;
    const keyPath = issue.path.map(String).join('.');
    throw new CheckpointError(`${where}: key "${keyPath}" is ${show(valueAt(obj, issue.path))}; expected ${FIELDS[key][1]}`);
  }
  const c = parsed.data;

  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') {
    throw refuse(where, 'hidden_act', c.hidden_act, '"silu" (the MLP is SwiGLU)');
  }
  if (c.attention_bias === true) {
    throw refuse(where, 'attention_bias', true, 'false (q/k/v/o projections without bias)');
  }
  if (c.use_sliding_window === true) {
    throw refuse(where, 'use_sliding_window', true, 'false (full causal attention in every layer)');
  }
  const sliding = (c.layer_types ?? []).findIndex((t) => t !== 'full_attention');
  if (sliding >= 0) {
    throw refuse(where, `layer_types[${sliding}]`, c.layer_types![sliding], '"full_attention" for every layer');
  }
  if (obj.quantization_config !== undefined && obj.quantization_config !== null) {
    throw refuse(where, 'quantization_config', obj.quantization_config, 'absent: load the unquantised bf16/f16/f32 checkpoint, the trainer quantises it to NF4 itself');
  }
  checkRopeScaling(where, obj.rope_scaling, 'rope_scaling');
  if (c.rope_parameters?.rope_type !== undefined) checkRopeScaling(where, c.rope_parameters, 'rope_parameters');

  const topTheta = c.rope_theta ?? undefined;
  const paramTheta = c.rope_parameters?.rope_theta;
  if (topTheta !== undefined && paramTheta !== undefined && topTheta !== paramTheta) {
    throw new CheckpointError(`${where}: "rope_theta" is ${topTheta} but "rope_parameters.rope_theta" is ${paramTheta}; they must agree (or give only one)`);
  }
  const ropeTheta = paramTheta ?? topTheta;
  if (ropeTheta === undefined) {
    throw new CheckpointError(`${where}: no RoPE base: expected "rope_theta" (transformers 4) or "rope_parameters.rope_theta" (transformers 5), found neither`);
  }

  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  if (heads % kvHeads !== 0) {
    throw new CheckpointError(`${where}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}; grouped-query attention needs whole groups`);
  }
  let headDim = c.head_dim ?? undefined;
  if (headDim === undefined) {
    if (c.hidden_size % heads !== 0) {
      throw new CheckpointError(`${where}: "head_dim" is absent and hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${heads}; give head_dim explicitly`);
    }
    headDim = c.hidden_size / heads;
  }
  if (headDim % 2 !== 0) {
    throw new CheckpointError(`${where}: head_dim ${headDim} is odd; rotary embeddings rotate pairs of dimensions, so it must be even`);
  }
  const eos = c.eos_token_id ?? [];

  return Object.freeze({
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    vocabSize: c.vocab_size,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    maxPositionEmbeddings: c.max_position_embeddings ?? 32768,
    torchDtype: c.dtype ?? c.torch_dtype ?? null,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: Object.freeze(typeof eos === 'number' ? [eos] : [...eos]),
    padTokenId: c.pad_token_id ?? null,
    raw: deepFreeze(structuredClone(obj)),
  });
}

/** RoPE scaling: absent, null, or rope_type (older configs: type) "default". */
function checkRopeScaling(where: string, value: unknown, key: string): void {
  if (value === undefined || value === null) return;
  const v = value as Record<string, unknown>;
  const type = typeof value === 'object' && !Array.isArray(value) ? (v.rope_type ?? v.type) : undefined;
  if (type !== 'default') {
    throw refuse(where, key, value, `absent, null or rope_type "default" (plain RoPE: this trainer implements no RoPE scaling such as yarn, linear or dynamic)`);
  }
}

function refuse(where: string, key: string, found: unknown, supported: string): CheckpointError {
  return new CheckpointError(`${where}: key "${key}" is ${show(found)}; supported: ${supported}`);
}

function valueAt(obj: unknown, path: readonly PropertyKey[]): unknown {
  let v = obj;
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function show(v: unknown): string {
  if (v === undefined) return 'missing';
  const s = JSON.stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}
