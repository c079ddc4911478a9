import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CheckpointError } from '../errors.js';
import { readPeftAdapter } from '../model/peft.js';
import type { Qwen3Config } from '../model/config.js';
import { peftKey } from '../model/lora.js';
import { SafetensorsFile } from '../model/safetensors.js';
import { CHECKPOINT_DIR_PATTERN, CHECKPOINT_FILES, parseCheckpointState, type CheckpointState } from './checkpoint-state.js';
import type { StateTensor } from './optimizer-state.js';
import type { TrainerState } from './trainer.js';

/**
 * Finding and reading training checkpoints (layout: checkpoint-writer.ts). `openCheckpoint` reads
 * only the small files (trainer_state.json, config.yaml) so the CLI can check a resume before it
 * loads any weights; `readCheckpointTensors` then reads the adapter, the optimiser state and the
 * best parameters.
 */

export interface CheckpointEntry {
  readonly step: number;
  readonly dir: string;
}

/** Complete checkpoints under `outputDir` (name checkpoint-<step> with a trainer_state.json), oldest first. */
export async function listCheckpoints(outputDir: string): Promise<CheckpointEntry[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CheckpointError(`${outputDir}: cannot list checkpoints (${(e as Error).message})`, { cause: e });
  }
  const out: CheckpointEntry[] = [];
  for (const name of names) {
    const m = CHECKPOINT_DIR_PATTERN.exec(name);
    const dir = join(outputDir, name);
    if (m && existsSync(join(dir, CHECKPOINT_FILES.state))) out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint under `outputDir`, if any. */
export async function latestCheckpoint(outputDir: string): Promise<CheckpointEntry | undefined> {
  const all = await listCheckpoints(outputDir);
  return all[all.length - 1];
}

export interface OpenedCheckpoint {
  readonly dir: string;
  readonly state: CheckpointState;
  /** config.yaml as written (the resolved config of the run that saved it). */
  readonly config: Record<string, unknown>;
}

/** Reads trainer_state.json and config.yaml (no tensors). */
export async function openCheckpoint(dir: string): Promise<OpenedCheckpoint> {
  const read = async (file: string): Promise<string> => {
    try {
      return await readFile(join(dir, file), 'utf8');
    } catch (e) {
      throw new CheckpointError(`${join(dir, file)}: cannot read it (${(e as Error).message}); ${dir} is not a complete training checkpoint`, { cause: e });
    }
  };
  const state = parseCheckpointState(await read(CHECKPOINT_FILES.state), join(dir, CHECKPOINT_FILES.state));
  let config: unknown;
  try {
    config = parseYaml(await read(CHECKPOINT_FILES.config));
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${join(dir, CHECKPOINT_FILES.config)}: not valid YAML (${(e as Error).message})`, { cause: e });
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new CheckpointError(`${join(dir, CHECKPOINT_FILES.config)}: expected a mapping of config keys`);
  return { dir, state, config: config as Record<string, unknown> };
}

export interface CheckpointTensors {
  readonly trainer: TrainerState;
  /** (arena elements) f32 — the parameters at the best evaluation, when it was at another step. */
  readonly bestParams: Float32Array | undefined;
}

/** Reads the adapter (checked against `model`), the optimiser state and the best parameters. */
export async function readCheckpointTensors(opened: OpenedCheckpoint, model: Qwen3Config): Promise<CheckpointTensors> {
  const { dir, state } = opened;
  const adapter = await readPeftAdapter(dir, model);
  const params = new Map<string, Float32Array>();
  adapter.layers.forEach((entry, l) => {
    for (const p of adapter.config.targetModules) {
      params.set(peftKey(l, p, 'A'), entry[p]!.a);
      params.set(peftKey(l, p, 'B'), entry[p]!.b);
    }
  });
  const optimizer: StateTensor[] = [];
  const optPath = join(dir, CHECKPOINT_FILES.optimizer);
  const opt = await SafetensorsFile.open(optPath);
  try {
    for (const [name, info] of opt.tensors) {
      if (info.dtype !== 'F32' && info.dtype !== 'U8') throw new CheckpointError(`${optPath}: ${name} is ${info.dtype}; optimiser state is F32 or U8`);
      const bytes = await opt.readBytes(name);
      optimizer.push({ name, dtype: info.dtype, shape: [...info.shape], data: bytes.slice() });
    }
  } finally {
    await opt.close();
  }
  let bestParams: Float32Array | undefined;
  if (state.hasBestParams) {
    const file = await SafetensorsFile.open(join(dir, CHECKPOINT_FILES.bestParams));
    try {
      bestParams = await file.readF32('params');
    } finally {
      await file.close();
    }
  }
  const t = state.trainer;
  return {
    trainer: { params, optimizer, optimizerSteps: t.optimizerSteps, microBatches: t.microBatches, gradNorm: Uint32Array.from(t.gradNorm), pendingLoss: t.pendingLoss },
    bestParams,
  };
}
