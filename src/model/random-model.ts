import { createHash } from 'node:crypto';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CheckpointError } from '../errors.js';
import { parseQwen3Config, type Qwen3Config } from './config.js';
import { RandomQwen3Source } from './random-source.js';
import { SafetensorsWriter } from './safetensors-writer.js';
import { bundledQwen3TokenizerDir } from './tokenizer.js';
import { writeDirAtomic } from '../io/atomic-dir.js';

/**
 * A Hugging Face model folder of deterministic random weights for a Qwen3 config.json, with the
 * bundled Qwen3 tokenizer: a real-size model where weights cannot be downloaded (the GPU host) and
 * the project's own small model (embedded.ts). Layout as transformers writes it: config.json, bf16
 * safetensors shards of at most `shardBytes` with model.safetensors.index.json (or one
 * model.safetensors when it fits), tokenizer.json, tokenizer_config.json, and random-model.json
 * (the recipe and every file's size). Weights stream from RandomQwen3Source chunk by chunk (64 MiB),
 * so memory stays bounded at any size.
 *
 * Cached: a folder whose random-model.json has the same recipe and whose files have the listed
 * sizes is reused as is; anything else is rebuilt under `<dir>.tmp-<pid>` and renamed into place
 * when complete (a crash leaves no half-written model).
 *
 * Scale: matrices uniform with standard deviation `std` (default: config.json's initializer_range,
 * else 0.02 — transformers' initialisation), the embedding `embedStd` (default std), norms 1. At
 * Qwen3-4B's shapes the first loss is then expected near ln V + (std·√D)²/2 ≈ 12.4 nats (not measured here).
 *
 * Time: Qwen3-4B is 4.02 G bf16 values (8.04 GB). Measured on the 2-core development machine
 * (2026-11-25): the generator alone 228 M values/s (one core), writing shards end to end 184 MB/s
 * (1.2 GB with 2 of 36 layers); so ≈ 45 s for the 4B folder there (estimated, not run), once.
 */
export interface RandomModelOptions {
  /** Seed of the weights (default 1). */
  readonly seed?: number;
  /** Standard deviation of the matrices (default: initializer_range, else 0.02). */
  readonly std?: number;
  /** Standard deviation of embed_tokens (and lm_head when untied); default `std`. */
  readonly embedStd?: number;
  /** Largest shard in bytes (default 2 GiB, as transformers' save_pretrained "2GB" shards roughly). */
  readonly shardBytes?: number;
  /** Progress lines (one per shard written). */
  readonly log?: (line: string) => void;
}

/** Bumped when the bytes a recipe produces change. */
const RANDOM_MODEL_FORMAT = 1;
const MANIFEST = 'random-model.json';
const DEFAULT_SHARD_BYTES = 2 * 2 ** 30;

interface Manifest {
  readonly format: number;
  readonly recipe: { readonly config: unknown; readonly seed: number; readonly std: number; readonly embedStd: number; readonly shardBytes: number };
  /** file name → bytes */
  readonly files: Record<string, number>;
}

export interface RandomModel {
  readonly dir: string;
  /** The folder was there already (nothing written). */
  readonly reused: boolean;
  /** Bytes of the safetensors shards. */
  readonly weightBytes: number;
  readonly seconds: number;
}

/**
 * Reads a config.json given as the file itself or a folder holding one; returns its raw JSON, the
 * parsed config and a short name for the model folder (the file's stem, or the folder's name).
 */
export async function readConfigSource(source: string): Promise<{ raw: Record<string, unknown>; config: Qwen3Config; name: string }> {
  let path = source;
  let isDir = false;
  try {
    isDir = (await stat(source)).isDirectory();
  } catch (e) {
    throw new CheckpointError(`random weights: ${source} does not exist; give a config.json (e.g. configs/models/qwen3-4b.json) or a folder holding one`, { cause: e });
  }
  if (isDir) path = join(source, 'config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`random weights: cannot read ${path} as JSON (${(e as Error).message}); expected a Qwen3 config.json`, { cause: e });
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CheckpointError(`random weights: ${path} holds no JSON object`);
  const config = parseQwen3Config(raw, path);
  const name = isDir ? basename(source) : basename(path).replace(/\.json$/i, '').replace(/^config$/, basename(dirname(path)));
  return { raw: raw as Record<string, unknown>, config, name };
}

/** The folder for a config.json under `root`: `<root>/<name>-random-<8 hex of the recipe>`. */
export function randomModelDir(root: string, name: string, raw: unknown, options: RandomModelOptions = {}): string {
  const hash = createHash('sha256').update(JSON.stringify(recipeOf(raw, options))).digest('hex').slice(0, 8);
  return join(root, `${name}-random-${hash}`);
}

function recipeOf(raw: unknown, options: RandomModelOptions): Manifest['recipe'] {
  const init = (raw as { initializer_range?: unknown }).initializer_range;
  const std = options.std ?? (typeof init === 'number' && init > 0 ? init : 0.02);
  return { config: raw, seed: options.seed ?? 1, std, embedStd: options.embedStd ?? std, shardBytes: options.shardBytes ?? DEFAULT_SHARD_BYTES };
}

/** True when `dir` holds a complete model written with this recipe. */
async function isComplete(dir: string, recipe: Manifest['recipe']): Promise<boolean> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return false;
  }
  if (manifest.format !== RANDOM_MODEL_FORMAT || JSON.stringify(manifest.recipe) !== JSON.stringify(recipe)) return false;
  for (const [file, bytes] of Object.entries(manifest.files)) {
    try {
      if ((await stat(join(dir, file))).size !== bytes) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Creates (or reuses) the random-weight model folder `dir` for the config.json object `raw`.
 */
export async function materializeRandomModel(raw: Record<string, unknown>, dir: string, options: RandomModelOptions = {}): Promise<RandomModel> {
  const t0 = performance.now();
  const recipe = recipeOf(raw, options);
  const config = parseQwen3Config(raw, `${dir}/config.json`);
  const source = new RandomQwen3Source(config, recipe.seed, recipe.std, (name) => (name.endsWith('embed_tokens.weight') || name === 'lm_head.weight' ? recipe.embedStd : recipe.std));
  const names = source.names();
  const bytesOf = (name: string) => source.info(name).shape.reduce((a, b) => a * b, 2);
  const weightBytes = names.reduce((a, n) => a + bytesOf(n), 0);
  if (await isComplete(dir, recipe)) return { dir, reused: true, weightBytes, seconds: (performance.now() - t0) / 1000 };

  // Shards: tensors in name order, a new shard when the next tensor would pass shardBytes.
  const shards: string[][] = [[]];
  let filled = 0;
  for (const name of names) {
    if (filled > 0 && filled + bytesOf(name) > recipe.shardBytes) {
      shards.push([]);
      filled = 0;
    }
    shards[shards.length - 1].push(name);
    filled += bytesOf(name);
  }
  const fileOf = (i: number) => (shards.length === 1 ? 'model.safetensors' : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`);

  await writeDirAtomic(dir, { overwrite: true }, async (tmp) => {
    const files: Record<string, number> = {};
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < shards.length; i++) {
      const file = fileOf(i);
      const writer = await SafetensorsWriter.create(
        join(tmp, file),
        shards[i].map((name) => ({ name, dtype: 'BF16' as const, shape: source.info(name).shape })),
        { format: 'pt' },
      );
      try {
        for (const name of shards[i]) {
          for await (const chunk of source.readChunks(name)) await writer.write(name, chunk.bytes);
          weightMap[name] = file;
        }
        await writer.finish();
      } catch (e) {
        await writer.abort();
        throw e;
      }
      files[file] = (await stat(join(tmp, file))).size;
      options.log?.(`random weights: ${file} written (${(files[file] / 2 ** 30).toFixed(2)} GiB, ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
    const text = async (file: string, content: string) => {
      await writeFile(join(tmp, file), content);
      files[file] = Buffer.byteLength(content);
    };
    await text('config.json', JSON.stringify(raw, null, 2) + '\n');
    if (shards.length > 1) await text('model.safetensors.index.json', JSON.stringify({ metadata: { total_size: weightBytes }, weight_map: weightMap }, null, 2) + '\n');
    const tok = bundledQwen3TokenizerDir();
    for (const file of ['tokenizer.json', 'tokenizer_config.json']) {
      await copyFile(join(tok, file), join(tmp, file));
      files[file] = (await stat(join(tmp, file))).size;
    }
    const manifest: Manifest = { format: RANDOM_MODEL_FORMAT, recipe, files };
    await writeFile(join(tmp, MANIFEST), JSON.stringify(manifest, null, 2) + '\n');
  });
  return { dir, reused: false, weightBytes, seconds: (performance.now() - t0) / 1000 };
}

/**
 * `random_weights: true`: the model folder for model_id = a config.json or a folder holding one,
 * created under `root` on first use (outputs/.random-models in the CLI).
 */
export async function randomModelFor(source: string, root: string, options: RandomModelOptions = {}): Promise<RandomModel> {
  const { raw, name } = await readConfigSource(source);
  return materializeRandomModel(raw, randomModelDir(root, name, raw, options), options);
}
