import { access, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { CheckpointError, ShapeError } from '../errors.js';
import { readQwen3Config, type Qwen3Config } from './config.js';
import { DEFAULT_CHUNK_BYTES, FLOAT_DTYPES, SafetensorsFile, type TensorChunk, type TensorInfo } from './safetensors.js';

/**
 * A Hugging Face Qwen3 model folder opened for streaming: config.json plus either one
 * model.safetensors or model.safetensors.index.json with its shards (each shard opened once).
 * At open only headers are read; every expected tensor (expectedQwen3Shapes) is checked for
 * presence, a float dtype and the shape config.json implies.
 *
 * Peak host memory: the headers, plus whatever a caller reads. readChunks streams a tensor through
 * one reusable buffer of chunkBytes (default 64 MiB), so loading the 8 GB Qwen3-4B checkpoint holds
 * one chunk at a time; readBytes/readF32 hold a whole tensor and are meant for small ones (norms,
 * tests).
 */

/** The seven LoRA-able linear projections of a decoder layer, in the order used everywhere. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** The submodule holding each projection: `model.layers.{l}.<module>.<projection>`. */
export const PROJECTION_MODULES: Readonly<Record<Projection, 'self_attn' | 'mlp'>> = Object.freeze({
  q_proj: 'self_attn',
  k_proj: 'self_attn',
  v_proj: 'self_attn',
  o_proj: 'self_attn',
  gate_proj: 'mlp',
  up_proj: 'mlp',
  down_proj: 'mlp',
});

/** Module path of projection `p` in layer `layer`, e.g. `model.layers.3.mlp.down_proj` (its weight adds `.weight`). */
export function projectionPath(layer: number, p: Projection): string {
  return `model.layers.${layer}.${PROJECTION_MODULES[p]}.${p}`;
}

/**
 * Weight shape (Nout, K) of projection `p` (y = x·Wᵀ):
 *   q_proj (H·Dh, D)   k_proj, v_proj (Hkv·Dh, D)   o_proj (D, H·Dh)
 *   gate_proj, up_proj (F, D)   down_proj (D, F)
 */
export function projectionShape(config: Qwen3Config, p: Projection): readonly [nOut: number, k: number] {
  const D = config.hiddenSize;
  const F = config.intermediateSize;
  const q = config.numAttentionHeads * config.headDim;
  const kv = config.numKeyValueHeads * config.headDim;
  switch (p) {
    case 'q_proj':
      return [q, D];
    case 'k_proj':
    case 'v_proj':
      return [kv, D];
    case 'o_proj':
      return [D, q];
    case 'gate_proj':
    case 'up_proj':
      return [F, D];
    case 'down_proj':
      return [D, F];
  }
}

/**
 * Every tensor a Qwen3 checkpoint must hold, with its shape:
 *   model.embed_tokens.weight (V, D); per layer input_layernorm / post_attention_layernorm (D),
 *   self_attn.q_norm / k_norm (Dh), the seven projections (projectionShape); model.norm.weight (D);
 *   lm_head.weight (V, D) only when the embeddings are not tied.
 */
export function expectedQwen3Shapes(config: Qwen3Config): ReadonlyMap<string, readonly number[]> {
  const D = config.hiddenSize;
  const m = new Map<string, readonly number[]>();
  m.set('model.embed_tokens.weight', [config.vocabSize, D]);
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const pre = `model.layers.${l}`;
    m.set(`${pre}.input_layernorm.weight`, [D]);
    m.set(`${pre}.post_attention_layernorm.weight`, [D]);
    m.set(`${pre}.self_attn.q_norm.weight`, [config.headDim]);
    m.set(`${pre}.self_attn.k_norm.weight`, [config.headDim]);
    for (const p of PROJECTIONS) m.set(`${projectionPath(l, p)}.weight`, projectionShape(config, p));
  }
  m.set('model.norm.weight', [D]);
  if (!config.tieWordEmbeddings) m.set('lm_head.weight', [config.vocabSize, D]);
  return m;
}

/** A tensor's entry plus the shard file holding it. */
export interface CheckpointTensorInfo extends TensorInfo {
  /** Path of the safetensors file (shard) holding the tensor. */
  readonly path: string;
}

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

export class Checkpoint {
  private constructor(
    readonly dir: string,
    readonly config: Qwen3Config,
    private readonly shards: readonly SafetensorsFile[],
    private readonly where: ReadonlyMap<string, SafetensorsFile>,
  ) {}

  /** Opens `dir`, validates config.json, the safetensors headers and every expected tensor's shape. */
  static async open(dir: string): Promise<Checkpoint> {
    const config = await readQwen3Config(dir);
    const shards: SafetensorsFile[] = [];
    try {
      const where = new Map<string, SafetensorsFile>();
      const single = join(dir, SINGLE_FILE);
      const index = join(dir, INDEX_FILE);
      // transformers prefers model.safetensors when both exist; so do we.
      if (await exists(single)) {
        const f = await SafetensorsFile.open(single);
        shards.push(f);
        for (const name of f.tensors.keys()) where.set(name, f);
      } else if (await exists(index)) {
        const weightMap = await readIndex(index);
        const byFile = new Map<string, SafetensorsFile>();
        for (const file of new Set(weightMap.values())) {
          const path = join(dir, file);
          if (!(await exists(path))) throw new CheckpointError(`${index}: shard "${file}" is listed in weight_map but ${path} does not exist`);
          const f = await SafetensorsFile.open(path);
          shards.push(f);
          byFile.set(file, f);
        }
        for (const [name, file] of weightMap) {
          const f = byFile.get(file)!;
          if (!f.has(name)) throw new CheckpointError(`${f.path}: tensor "${name}" is missing, though ${index} places it in this shard`);
          where.set(name, f);
        }
      } else {
        const hint = (await exists(join(dir, 'pytorch_model.bin'))) ? ' (pytorch_model.bin is not supported: convert it to safetensors)' : '';
        throw new CheckpointError(`${dir}: no ${SINGLE_FILE} or ${INDEX_FILE} found${hint}`);
      }
      const ckpt = new Checkpoint(dir, config, shards, where);
      ckpt.checkShapes();
      return ckpt;
    } catch (e) {
      await Promise.all(shards.map((s) => s.close()));
      throw e;
    }
  }

  /** All tensor names of the checkpoint, sorted. */
  names(): string[] {
    return [...this.where.keys()].sort();
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): CheckpointTensorInfo {
    const f = this.file(name);
    return { ...f.info(name), path: f.path };
  }

  /** Streams a tensor through one reusable buffer (see SafetensorsFile.readChunks). */
  readChunks(name: string, chunkBytes: number = DEFAULT_CHUNK_BYTES, into?: Uint8Array): AsyncGenerator<TensorChunk> {
    return this.file(name).readChunks(name, chunkBytes, into);
  }

  /** A whole tensor's bytes: small tensors only. */
  readBytes(name: string): Promise<Uint8Array> {
    return this.file(name).readBytes(name);
  }

  /** A whole BF16/F16/F32 tensor as f32: small tensors and tests only. */
  readF32(name: string): Promise<Float32Array> {
    return this.file(name).readF32(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }

  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new CheckpointError(`${this.dir}: the checkpoint has no tensor "${name}"`);
    return f;
  }

  private checkShapes(): void {
    const c = this.config;
    const dims =
      `hidden_size=${c.hiddenSize}, intermediate_size=${c.intermediateSize}, num_attention_heads=${c.numAttentionHeads}, ` +
      `num_key_value_heads=${c.numKeyValueHeads}, head_dim=${c.headDim}, vocab_size=${c.vocabSize}`;
    const expected = new Map(expectedQwen3Shapes(c));
    // A tied checkpoint may still carry lm_head.weight (a copy): it must then have the embedding's shape.
    if (c.tieWordEmbeddings && this.has('lm_head.weight')) expected.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
    for (const [name, shape] of expected) {
      const f = this.where.get(name);
      if (!f) {
        const why = name === 'lm_head.weight' ? ' (config.json has tie_word_embeddings false, so it is needed)' : '';
        throw new CheckpointError(
          `${this.dir}: tensor "${name}" is missing${why}; expected shape [${shape.join(', ')}]: the checkpoint and config.json disagree (${c.numHiddenLayers} layers)`,
        );
      }
      const t = f.info(name);
      if (!FLOAT_DTYPES.includes(t.dtype)) {
        throw new CheckpointError(`${f.path}: tensor "${name}" is ${t.dtype}; the model weights must be ${FLOAT_DTYPES.join(', ')}`);
      }
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new ShapeError(
          `${f.path}: tensor "${name}" has shape [${t.shape.join(', ')}] but config.json implies [${shape.join(', ')}] (${dims}): the checkpoint and config.json disagree`,
        );
      }
    }
  }
}

/** Parses the index's weight_map: tensor name → shard file name (a plain file in the same folder). */
async function readIndex(path: string): Promise<Map<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read the shard index (${(e as Error).message})`, { cause: e });
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new CheckpointError(`${path}: expected an object with "weight_map": {tensor name: shard file}, found no weight_map object`);
  }
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== 'string' || file.length === 0 || basename(file) !== file || file === '.' || file === '..') {
      throw new CheckpointError(`${path}: weight_map["${name}"] is ${JSON.stringify(file)}; expected the file name of a shard in the same folder`);
    }
    out.set(name, file);
  }
  if (out.size === 0) throw new CheckpointError(`${path}: weight_map is empty`);
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
