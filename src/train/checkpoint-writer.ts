import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import type { TrainConfig } from '../config/schema.js';
import { CheckpointError } from '../errors.js';
import { savePeftAdapter, type HostLoraAdapter, type HostLoraPair } from '../model/peft.js';
import { isNoSpaceError, writeFileAtomic, type FileSystem } from '../io/atomic-file.js';
import { removeStaleTemporaries, temporaryName } from '../io/temp-name.js';
import { PROJECTIONS, projectionShape, type Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { peftKey, type LoraConfig } from '../model/lora.js';
import { SafetensorsWriter, type SafetensorsEntry } from '../model/safetensors-writer.js';
import { listCheckpoints } from './checkpoint-reader.js';
import { CHECKPOINT_FILES, CHECKPOINT_FORMAT, checkpointDirName, type CheckpointState, type LoopState } from './checkpoint-state.js';
import type { CheckpointRecord } from './events.js';
import type { TrainerState } from './trainer.js';

/**
 * Training checkpoints. Layout of output_dir/checkpoint-<step>/:
 *
 *   adapter_model.safetensors  the LoRA parameters in PEFT's layout (savePeftAdapter): per targeted
 *   adapter_config.json        projection p of layer l, …layers.{l}.….{p}.lora_A.weight (R, K) F32 and
 *                              lora_B.weight (Nout, R) F32 — loadable by PEFT and by `export --adapter`
 *   optimizer.safetensors      the optimiser state over the parameter arena (n elements, padding
 *                              included; metadata: format, optimizer, step):
 *                                AdamW      exp_avg, exp_avg_sq        (n) F32
 *                                8-bit      state1, state2             (n) U8 codes of m and v
 *                                           absmax                     (n/256, 2) F32 block scales
 *                                           small.exp_avg, small.exp_avg_sq (s) F32, the tensors
 *                                           under min_8bit_size (present only when there are some)
 *   trainer_state.json         CheckpointState (checkpoint-state.ts): global step, fractional epoch,
 *                              data position (epoch, next micro-batch), scheduler step, the Trainer's
 *                              optimiser-step and micro-batch counters (the micro-batch counter seeds
 *                              LoRA dropout), grad-norm state with its sticky skipped-step count,
 *                              best eval loss and step, early stopping's bad-evaluation count, the
 *                              eval and log histories (the metrics so far), elapsed seconds
 *   config.yaml                the run's resolved config (resume compares it with the new one)
 *   best_params.safetensors    only when load_best_model_at_end and the best evaluation was at
 *                              another step: `params` (n) F32, the arena at that evaluation
 *
 * Atomic: everything is written into checkpoint-<step>.tmp-<pid>/ (each file fsynced) and the
 * folder is renamed when complete, so a crash never leaves a half checkpoint under the final name;
 * readers ignore the temporary names. On any failure the temporary folder is removed and the
 * previous checkpoints are untouched; ENOSPC says so in words.
 *
 * save_total_limit keeps the newest N complete checkpoints; with load_best_model_at_end the best
 * evaluation's checkpoint (when one exists at that step) is kept as well. A checkpoint is removed
 * by renaming it away first, then deleting.
 */

export interface CheckpointContent {
  readonly reason: CheckpointRecord['reason'];
  readonly loop: LoopState;
  readonly trainer: TrainerState;
  readonly optimizer: 'adamw' | 'adamw_8bit';
  /** (n) f32 — the arena at the best evaluation, when that was at another step. */
  readonly bestParams?: Float32Array;
  readonly config: TrainConfig;
}

export interface CheckpointTarget {
  readonly outputDir: string;
  /** The model the adapter belongs to (its projection shapes). */
  readonly model: Qwen3Config;
  readonly lora: LoraConfig;
  readonly loraScale: number;
  /** base_model_name_or_path of adapter_config.json. */
  readonly baseModel: string | null;
  /** The file system for the checkpoint's own files (tests inject ENOSPC through it). */
  readonly fs?: FileSystem;
}

/** Writes checkpoint-<step> atomically, then applies save_total_limit; returns the folder. */
export async function writeTrainingCheckpoint(target: CheckpointTarget, content: CheckpointContent): Promise<string> {
  const step = content.loop.globalStep;
  const finalDir = join(target.outputDir, checkpointDirName(step));
  const temp = temporaryName(finalDir);
  const previous = (await listCheckpoints(target.outputDir)).filter((c) => c.step !== step).pop();
  let current: string = CHECKPOINT_FILES.adapterWeights;
  try {
    await mkdir(target.outputDir, { recursive: true });
    await removeStaleTemporaries(target.outputDir);
    await rm(temp, { recursive: true, force: true });
    // savePeftAdapter creates `temp` itself (through its own temporary name).
    await savePeftAdapter(temp, hostAdapter(target, content.trainer.params), { baseModel: target.baseModel, overwrite: true });

    current = CHECKPOINT_FILES.optimizer;
    await writeOptimizerState(join(temp, current), content, target.fs);

    if (content.bestParams) {
      current = CHECKPOINT_FILES.bestParams;
      const w = await SafetensorsWriter.create(join(temp, current), [{ name: 'params', dtype: 'F32', shape: [content.bestParams.length] }], { format: CHECKPOINT_FORMAT }, { fs: target.fs });
      try {
        await w.write('params', content.bestParams);
        await w.finish();
      } finally {
        await w.abort();
      }
    }

    current = CHECKPOINT_FILES.config;
    await writeFileAtomic(join(temp, current), stringifyYaml(content.config), { fs: target.fs, error: (m, o) => new CheckpointError(m, o) });

    current = CHECKPOINT_FILES.state;
    const t = content.trainer;
    const state: CheckpointState = {
      format: CHECKPOINT_FORMAT,
      reason: content.reason,
      savedAt: new Date().toISOString(),
      loop: content.loop,
      trainer: { optimizer: content.optimizer, optimizerSteps: t.optimizerSteps, microBatches: t.microBatches, gradNorm: [...t.gradNorm], pendingLoss: t.pendingLoss },
      hasBestParams: content.bestParams !== undefined,
    };
    await writeFileAtomic(join(temp, current), `${JSON.stringify(state, null, 1)}\n`, { fs: target.fs, error: (m, o) => new CheckpointError(m, o) });

    current = 'the folder rename';
    await replaceFolder(temp, finalDir);
  } catch (e) {
    await rm(temp, { recursive: true, force: true }).catch(() => undefined);
    const intact = previous ? `the previous checkpoint ${previous.dir} is intact` : 'no earlier checkpoint exists';
    if (isNoSpaceError(e)) {
      throw new CheckpointError(`no space left on device while writing ${join(finalDir, current)}; ${intact}; free space or lower save_total_limit`, { cause: e });
    }
    throw new CheckpointError(`writing checkpoint ${finalDir} failed at ${current} (${(e as Error).message}); nothing of it was kept; ${intact}`, { cause: e });
  }
  await rotateCheckpoints(target.outputDir, content.config.save_total_limit, content.config.load_best_model_at_end ? content.loop.best?.step : undefined);
  return finalDir;
}

/** The host adapter savePeftAdapter writes, from the Trainer's parameters by PEFT key. */
function hostAdapter(target: CheckpointTarget, params: ReadonlyMap<string, Float32Array>): HostLoraAdapter {
  const layers: Partial<Record<Projection, HostLoraPair>>[] = [];
  for (let l = 0; l < target.model.numHiddenLayers; l++) {
    const entry: Partial<Record<Projection, HostLoraPair>> = {};
    for (const p of target.lora.targetModules) {
      const a = params.get(peftKey(l, p, 'A'));
      const b = params.get(peftKey(l, p, 'B'));
      if (!a || !b) throw new CheckpointError(`checkpoint: the trainer has no ${peftKey(l, p, a ? 'B' : 'A')} although the adapter targets ${p}`);
      entry[p] = { a, b };
    }
    layers.push(entry);
  }
  const shapes = Object.fromEntries(PROJECTIONS.map((p) => [p, projectionShape(target.model, p)])) as Record<Projection, readonly [number, number]>;
  return { config: target.lora, scale: target.loraScale, layers, shapes };
}

async function writeOptimizerState(path: string, content: CheckpointContent, fs: FileSystem | undefined): Promise<void> {
  const tensors = content.trainer.optimizer;
  const entries: SafetensorsEntry[] = tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
  const metadata = { format: CHECKPOINT_FORMAT, optimizer: content.optimizer, step: String(content.trainer.optimizerSteps) };
  const w = await SafetensorsWriter.create(path, entries, metadata, { fs });
  try {
    for (const t of tensors) await w.write(t.name, t.data);
    await w.finish();
  } finally {
    await w.abort();
  }
}

/** Renames `temp` to `dir`; an existing `dir` (a stale folder of an earlier run) is moved away first, then removed. */
async function replaceFolder(temp: string, dir: string): Promise<void> {
  const old = temporaryName(dir, 'old');
  let moved = false;
  try {
    await rename(dir, old);
    moved = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  await rename(temp, dir);
  if (moved) await rm(old, { recursive: true, force: true });
}

/**
 * Keeps the newest `limit` complete checkpoints (null: all) and the one at `protectStep` (the best
 * evaluation's, when it has one). Each removed folder is first renamed away, so no half-deleted
 * folder keeps a checkpoint's name.
 */
export async function rotateCheckpoints(outputDir: string, limit: number | null, protectStep: number | undefined): Promise<string[]> {
  if (limit === null) return [];
  const all = await listCheckpoints(outputDir);
  const keep = new Set(all.slice(-limit).map((c) => c.step));
  if (protectStep !== undefined) keep.add(protectStep);
  const removed: string[] = [];
  for (const c of all) {
    if (keep.has(c.step)) continue;
    const gone = temporaryName(c.dir, 'deleting');
    try {
      await rename(c.dir, gone);
    } catch (e) {
      throw new CheckpointError(`save_total_limit: cannot remove ${c.dir} (${(e as Error).message}); remove it by hand`, { cause: e });
    }
    await rm(gone, { recursive: true, force: true });
    removed.push(c.dir);
  }
  return removed;
}

/** Kept for callers of the checkpoint module; the pattern lives in src/io/temp-name.ts. */
export { removeStaleTemporaries };
