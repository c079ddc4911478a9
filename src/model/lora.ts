import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CheckpointError, ShapeError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Tensor } from '../kernels/tensor.js';
import { SafetensorsFile } from './safetensors.js';
import type { Qwen3Config } from './config.js';
import { PROJECTION_MODULES, PROJECTIONS, type Projection, projectionShape } from './checkpoint.js';

/**
 * LoRA adapters in PEFT's layout: for each targeted projection W (Nout, K) of each layer,
 * A (R, K) and B (Nout, R), and the forward y = x·Wᵀ + scale · (x·Aᵀ)·Bᵀ with
 * scale = alpha / r (or alpha / √r with use_rslora). Held on the GPU in f32.
 */
export interface LoraConfig {
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly targetModules: readonly Projection[];
  readonly useRslora: boolean;
}

export function loraScale(c: LoraConfig): number {
  return c.useRslora ? c.alpha / Math.sqrt(c.r) : c.alpha / c.r;
}

/** PEFT's key for a LoRA tensor, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight. */
export function peftKey(layer: number, p: Projection, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${PROJECTION_MODULES[p]}.${p}.lora_${which}.weight`;
}

export interface LoraPair {
  /** (R, K) f32 — down-projection */
  readonly a: Tensor;
  /** (Nout, R) f32 — up-projection */
  readonly b: Tensor;
}

export interface LoraAdapter {
  readonly config: LoraConfig;
  readonly scale: number;
  /** layers[l][p] is present when p is targeted. */
  readonly layers: readonly Partial<Record<Projection, LoraPair>>[];
}

const AdapterConfigSchema = z
  .object({
    peft_type: z.literal('LORA').optional(),
    r: z.number().int().positive(),
    lora_alpha: z.number().positive(),
    lora_dropout: z.number().min(0).max(1).default(0),
    target_modules: z.union([z.array(z.string()), z.string()]),
    use_rslora: z.boolean().default(false),
    use_dora: z.boolean().default(false),
    bias: z.string().default('none'),
    fan_in_fan_out: z.boolean().default(false),
    modules_to_save: z.array(z.string()).nullable().default(null),
    layers_to_transform: z.unknown().nullable().default(null),
    rank_pattern: z.record(z.string(), z.unknown()).default({}),
    alpha_pattern: z.record(z.string(), z.unknown()).default({}),
  })
  .passthrough();

/** Parses adapter_config.json; refuses PEFT features this trainer does not implement. */
export function parseAdapterConfig(json: unknown, where: string): LoraConfig {
  const parsed = AdapterConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CheckpointError(`${where}: key "${issue.path.join('.')}": ${issue.message}`);
  }
  const c = parsed.data;
  const refuse = (key: string, found: unknown, supported: string): never => {
    throw new CheckpointError(`${where}: ${key} = ${JSON.stringify(found)} is not supported (supported: ${supported})`);
  };
  if (c.use_dora) refuse('use_dora', true, 'false');
  if (c.bias !== 'none') refuse('bias', c.bias, '"none"');
  if (c.fan_in_fan_out) refuse('fan_in_fan_out', true, 'false');
  if (c.modules_to_save && c.modules_to_save.length > 0) refuse('modules_to_save', c.modules_to_save, 'null');
  if (c.layers_to_transform !== null) refuse('layers_to_transform', c.layers_to_transform, 'null (all layers)');
  if (Object.keys(c.rank_pattern).length > 0) refuse('rank_pattern', c.rank_pattern, '{}');
  if (Object.keys(c.alpha_pattern).length > 0) refuse('alpha_pattern', c.alpha_pattern, '{}');
  let targets: Projection[];
  if (typeof c.target_modules === 'string') {
    if (c.target_modules !== 'all-linear') refuse('target_modules', c.target_modules, `a list of ${PROJECTIONS.join(', ')} or "all-linear"`);
    targets = [...PROJECTIONS];
  } else {
    for (const t of c.target_modules) {
      if (!(PROJECTIONS as readonly string[]).includes(t)) refuse('target_modules', t, PROJECTIONS.join(', '));
    }
    targets = PROJECTIONS.filter((p) => (c.target_modules as string[]).includes(p));
  }
  return Object.freeze({ r: c.r, alpha: c.lora_alpha, dropout: c.lora_dropout, targetModules: Object.freeze(targets), useRslora: c.use_rslora });
}

/**
 * Loads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) onto the GPU.
 * Every tensor is checked against the model's shapes; an adapter for another model (or with
 * missing / extra tensors) is a ShapeError naming the key.
 */
export async function loadLoraAdapter(gpu: Gpu, dir: string, model: Qwen3Config): Promise<LoraAdapter> {
  const configPath = join(dir, 'adapter_config.json');
  let json: unknown;
  try {
    json = JSON.parse(await readFile(configPath, 'utf8'));
  } catch (e) {
    throw new CheckpointError(`cannot read adapter config ${configPath}: ${(e as Error).message}`, { cause: e });
  }
  const config = parseAdapterConfig(json, configPath);
  const file = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  try {
    const expected = new Set<string>();
    const layers: Partial<Record<Projection, LoraPair>>[] = [];
    for (let l = 0; l < model.numHiddenLayers; l++) {
      const entry: Partial<Record<Projection, LoraPair>> = {};
      for (const p of config.targetModules) {
        const [nOut, k] = projectionShape(model, p);
        const load = async (which: 'A' | 'B', shape: [number, number]): Promise<Tensor> => {
          const key = peftKey(l, p, which);
          expected.add(key);
          const info = file.tensors.get(key);
          if (!info) throw new ShapeError(`${file.path}: missing tensor ${key} (the adapter config targets ${p})`);
          if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
            throw new ShapeError(
              `${file.path}: ${key} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}] ` +
                `(r=${config.r}, projection ${nOut}×${k}); the adapter was made for a model of another shape`,
            );
          }
          return gpu.tensorFrom(`lora ${l}.${p}.${which}`, shape, 'f32', await file.readF32(key));
        };
        entry[p] = { a: await load('A', [config.r, k]), b: await load('B', [nOut, config.r]) };
      }
      layers.push(entry);
    }
    const extra = [...file.tensors.keys()].filter((k) => !expected.has(k));
    if (extra.length > 0) {
      throw new ShapeError(`${file.path}: ${extra.length} tensor(s) not expected for a ${model.numHiddenLayers}-layer model with these targets, e.g. ${extra[0]}`);
    }
    return Object.freeze({ config, scale: loraScale(config), layers });
  } finally {
    await file.close();
  }
}
