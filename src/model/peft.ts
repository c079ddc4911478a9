import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError, ExportError, ShapeError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { PROJECTIONS, projectionShape, type Projection } from './checkpoint.js';
import type { Qwen3Config } from './config.js';
import { loraScale, parseAdapterConfig, peftKey, type LoraAdapter, type LoraConfig } from './lora.js';
import { FLOAT_DTYPES, SafetensorsFile } from './safetensors.js';
import { SafetensorsWriter, type SafetensorsEntry } from './safetensors-writer.js';
import { writeDirAtomic } from '../io/atomic-dir.js';

/**
 * LoRA adapters on the host, in PEFT's folder layout (what `save_pretrained` of PEFT 0.21 writes):
 *
 *   adapter_config.json         every key PEFT writes, sorted, indent 2
 *   adapter_model.safetensors   metadata {"format": "pt"}; per targeted projection p of layer l
 *                               base_model.model.model.layers.{l}.{self_attn|mlp}.{p}.lora_A.weight (R, K) f32
 *                               and …lora_B.weight (Nout, R) f32, in sorted key order (safetensors'
 *                               Rust writer sorts by dtype, then name), header padded to 8 bytes
 *
 * Saving what was read gives the same bytes (tests/model/peft.test.ts compares with the fixture
 * PEFT wrote). Reads accept F32, BF16 and F16 tensors (widened exactly to f32).
 */

/** One projection's factors: a (R, K) f32 row-major, b (Nout, R) f32 row-major. */
export interface HostLoraPair {
  readonly a: Float32Array;
  readonly b: Float32Array;
}

export interface HostLoraAdapter {
  readonly config: LoraConfig;
  readonly scale: number;
  /** layers[l][p] is present when p is targeted. */
  readonly layers: readonly Partial<Record<Projection, HostLoraPair>>[];
  /** Shapes (Nout, K) of each projection, from the model the adapter belongs to. */
  readonly shapes: Readonly<Record<Projection, readonly [number, number]>>;
  /** adapter_config.json as read (kept when saving again); undefined for a new adapter. */
  readonly rawConfig?: Readonly<Record<string, unknown>>;
}

const CONFIG_FILE = 'adapter_config.json';
const WEIGHTS_FILE = 'adapter_model.safetensors';

function shapesOf(model: Qwen3Config): Record<Projection, readonly [number, number]> {
  return Object.fromEntries(PROJECTIONS.map((p) => [p, projectionShape(model, p)])) as Record<Projection, readonly [number, number]>;
}

/**
 * Reads a PEFT adapter folder into host memory and checks every tensor against `model`'s shapes:
 * an adapter made for another model, or with missing or extra tensors, is a ShapeError naming the key.
 */
export async function readPeftAdapter(dir: string, model: Qwen3Config): Promise<HostLoraAdapter> {
  const configPath = join(dir, CONFIG_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(configPath, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`${configPath}: cannot read the adapter config (${(e as Error).message}); a PEFT adapter folder holds ${CONFIG_FILE} and ${WEIGHTS_FILE}`, {
      cause: e,
    });
  }
  const config = parseAdapterConfig(raw, configPath);
  const file = await SafetensorsFile.open(join(dir, WEIGHTS_FILE));
  try {
    const expected = new Set<string>();
    const layers: Partial<Record<Projection, HostLoraPair>>[] = [];
    for (let l = 0; l < model.numHiddenLayers; l++) {
      const entry: Partial<Record<Projection, HostLoraPair>> = {};
      for (const p of config.targetModules) {
        const [nOut, k] = projectionShape(model, p);
        const load = async (which: 'A' | 'B', shape: [number, number]): Promise<Float32Array> => {
          const key = peftKey(l, p, which);
          expected.add(key);
          const info = file.tensors.get(key);
          if (!info) throw new ShapeError(`${file.path}: missing tensor ${key} (adapter_config.json targets ${p})`);
          if (!FLOAT_DTYPES.includes(info.dtype)) throw new ShapeError(`${file.path}: ${key} is ${info.dtype}; expected ${FLOAT_DTYPES.join(', ')}`);
          if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
            throw new ShapeError(
              `${file.path}: ${key} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}] (r=${config.r}, ${p} is ${nOut}×${k} in ` +
                `this model: hidden ${model.hiddenSize}, ${model.numHiddenLayers} layers); the adapter was made for a model of another shape`,
            );
          }
          return file.readF32(key);
        };
        entry[p] = { a: await load('A', [config.r, k]), b: await load('B', [nOut, config.r]) };
      }
      layers.push(entry);
    }
    const extra = [...file.tensors.keys()].filter((k) => !expected.has(k));
    if (extra.length > 0) {
      throw new ShapeError(
        `${file.path}: ${extra.length} tensor(s) not expected for a ${model.numHiddenLayers}-layer model with targets ${config.targetModules.join(', ')}, ` +
          `e.g. ${extra[0]}; the adapter was made for another model`,
      );
    }
    return Object.freeze({ config, scale: loraScale(config), layers, shapes: shapesOf(model), rawConfig: raw as Record<string, unknown> });
  } finally {
    await file.close();
  }
}

/** Reads an adapter held on the GPU (training's LoraAdapter) back to the host. */
export async function adapterFromGpu(gpu: Gpu, adapter: LoraAdapter, model: Qwen3Config): Promise<HostLoraAdapter> {
  const layers: Partial<Record<Projection, HostLoraPair>>[] = [];
  for (const entry of adapter.layers) {
    const host: Partial<Record<Projection, HostLoraPair>> = {};
    for (const p of adapter.config.targetModules) {
      const pair = entry[p];
      if (!pair) throw new ShapeError(`adapterFromGpu: the adapter targets ${p} but a layer has no ${p} factors`);
      host[p] = { a: await gpu.readF32(pair.a), b: await gpu.readF32(pair.b) };
    }
    layers.push(host);
  }
  if (layers.length !== model.numHiddenLayers) throw new ShapeError(`adapterFromGpu: the adapter has ${layers.length} layers, the model ${model.numHiddenLayers}`);
  return Object.freeze({ config: adapter.config, scale: adapter.scale, layers, shapes: shapesOf(model) });
}

/** adapter_config.json as PEFT 0.21 writes it for this adapter: every key, sorted. */
export function peftAdapterConfig(config: LoraConfig, baseModel: string | null, raw?: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const defaults: Record<string, unknown> = {
    alora_invocation_tokens: null, alpha_pattern: {}, arrow_config: null, auto_mapping: null, base_model_name_or_path: null, bias: 'none',
    corda_config: null, ensure_weight_tying: false, eva_config: null, exclude_modules: null, fan_in_fan_out: false, inference_mode: true,
    init_lora_weights: true, kasa_config: null, layer_replication: null, layers_pattern: null, layers_to_transform: null, loftq_config: {},
    lora_alpha: config.alpha, lora_bias: false, lora_dropout: config.dropout, lora_ga_config: null, megatron_config: null,
    megatron_core: 'megatron.core', modules_to_save: null, monteclora_config: null, peft_type: 'LORA', peft_version: '0.21.0',
    qalora_group_size: 16, r: config.r, rank_pattern: {}, revision: null, target_modules: [...config.targetModules].sort(),
    target_parameters: null, task_type: 'CAUSAL_LM', trainable_token_indices: null, use_bdlora: null, use_dora: false, use_qalora: false,
    use_rslora: config.useRslora, velora_config: null,
  };
  const merged: Record<string, unknown> = { ...defaults, ...(raw ?? {}) };
  // The values that define the adapter always come from `config`.
  Object.assign(merged, { r: config.r, lora_alpha: config.alpha, lora_dropout: config.dropout, use_rslora: config.useRslora, inference_mode: true });
  if (raw === undefined || !sameTargets(raw.target_modules, config.targetModules)) merged.target_modules = [...config.targetModules].sort();
  if (baseModel !== null) merged.base_model_name_or_path = baseModel;
  return Object.fromEntries(Object.keys(merged).sort().map((k) => [k, merged[k]]));
}

function sameTargets(value: unknown, targets: readonly Projection[]): boolean {
  if (value === 'all-linear') return targets.length === PROJECTIONS.length;
  return Array.isArray(value) && value.length === targets.length && targets.every((t) => value.includes(t));
}

/**
 * Writes `adapter` as a PEFT folder `dir` (created; an existing folder is refused unless
 * `overwrite`). Files are written into `<dir>.tmp-<pid>` and the folder renamed when complete.
 */
export async function savePeftAdapter(
  dir: string,
  adapter: HostLoraAdapter,
  options: { baseModel?: string | null; overwrite?: boolean } = {},
): Promise<void> {
  await writeDirAtomic(dir, { overwrite: options.overwrite ?? false }, async (temp) => {
    const entries: SafetensorsEntry[] = [];
    const data = new Map<string, Float32Array>();
    adapter.layers.forEach((entry, l) => {
      for (const p of adapter.config.targetModules) {
        const pair = entry[p];
        const [nOut, k] = adapter.shapes[p];
        if (!pair) throw new ExportError(`savePeftAdapter(${dir}): layer ${l} has no ${p} factors but the adapter targets ${p}`);
        if (pair.a.length !== adapter.config.r * k || pair.b.length !== nOut * adapter.config.r) {
          throw new ExportError(`savePeftAdapter(${dir}): layer ${l} ${p}: A has ${pair.a.length} values, B ${pair.b.length}; expected ${adapter.config.r}×${k} and ${nOut}×${adapter.config.r}`);
        }
        entries.push({ name: peftKey(l, p, 'A'), dtype: 'F32', shape: [adapter.config.r, k] });
        entries.push({ name: peftKey(l, p, 'B'), dtype: 'F32', shape: [nOut, adapter.config.r] });
        data.set(peftKey(l, p, 'A'), pair.a);
        data.set(peftKey(l, p, 'B'), pair.b);
      }
    });
    entries.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    const writer = await SafetensorsWriter.create(join(temp, WEIGHTS_FILE), entries, { format: 'pt' });
    try {
      for (const e of entries) await writer.write(e.name, data.get(e.name)!);
      await writer.finish();
    } finally {
      await writer.abort();
    }
    const config = peftAdapterConfig(adapter.config, options.baseModel ?? null, adapter.rawConfig);
    await writeFile(join(temp, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
  });
}

