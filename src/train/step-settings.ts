/**
 * The step settings of a run — what the memory plan is asked about and what the Trainer builds —
 * computed in one place for the real run and `--dry-run` alike, so both print the same plan for the
 * same config and device: the recompute policy from `gradient_checkpointing`, the loss head the
 * step will get on this adapter (fused on CPU adapters where the lm_head allows it, else chunked)
 * and its logits chunk (chooseLossChunk on this device's binding limit).
 */
import type { TrainConfig } from '../config/schema.js';
import { fusedHeadUnsupported, fusedWeightUnsupported } from '../kernels/cross-entropy-fused.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Qwen3Config } from '../model/config.js';
import { chooseLossChunk, type LossHeadMode } from '../model/loss-head.js';
import type { LinearWeight } from '../kernels/matmul.js';
import { countStepDispatches } from './dispatch-count.js';
import { bufferLimitError, guessDeviceMemory, planStep, withDispatchCounts, type StepPlan, type StepSettings } from './plan.js';
import { autoRecompute, maxMemoryBytes, resumedAutoRecompute } from './auto-recompute.js';
import type { RecordedRecompute } from './recompute-record.js';
import { checkpointedLayers, recomputePolicy } from './recompute.js';
import { chooseComputePath, type ComputePath } from '../model/compute-path.js';

/** Settings of the memory plan for a config and batch shape, with the loss head given. */
export function stepSettings(config: TrainConfig, B: number, T: number, lossChunkTokens: number, lossHead: LossHeadMode = 'chunked', compute: ComputePath = 'f32'): StepSettings {
  const recompute = recomputePolicy(config.gradient_checkpointing);
  return {
    batch: B,
    seq: T,
    r: config.lora_r,
    targets: config.lora_target_modules,
    gradientCheckpointing: recompute !== 'none',
    recompute,
    optimizer: /8bit/.test(config.optim) ? 'adamw_8bit' : 'adamw',
    base: config.use_4bit ? 'nf4' : 'full',
    doubleQuant: config.bnb_4bit_use_double_quant,
    lossChunkTokens,
    lossHead,
    loraDropout: config.lora_dropout,
    compute,
  };
}

/** The loss head TrainStep gets on `gpu` ('auto' in src/model/loss-head.ts): the loaded lm_head is bf16 (V, D). */
export function deviceLossHead(gpu: Gpu, model: Qwen3Config): LossHeadMode {
  const lmHead = { format: 'bf16', nOut: model.vocabSize, k: model.hiddenSize } as LinearWeight;
  return fusedHeadUnsupported(gpu) === undefined && fusedWeightUnsupported(lmHead) === undefined ? 'fused' : 'chunked';
}

/**
 * The budget `gradient_checkpointing: auto` plans against (autoRecompute's budgetBytes and
 * budgetFrom): `maxMemory` (max_memory, or the flag named `key` that gave it) when given, else the
 * device's memory where its name tells it (guessDeviceMemory), else undefined.
 */
export function recomputeBudget(maxMemory: number | string | null, gpu: Pick<Gpu, 'adapterInfo'>, key = 'max_memory'): { readonly bytes: number | undefined; readonly from: string } {
  const given = maxMemoryBytes(maxMemory, key);
  return given !== undefined ? { bytes: given, from: key } : { bytes: guessDeviceMemory(gpu.adapterInfo), from: 'the device\'s' };
}

/**
 * The one function both `train` and `train --dry-run` plan with: settings for `config` at (B, T) on
 * `gpu`. Checks the per-layer checkpoint count against the model's layers (error names the key);
 * the compute path from `compute_dtype` on this adapter (float16 without tensor cores: a DeviceError).
 * `gradient_checkpointing: auto` plans against max_memory or the device's memory; a resumed run
 * passes the recompute its run.json recorded (`recorded`), which it keeps where it fits.
 */
export function runStepSettings(config: TrainConfig, model: Qwen3Config, gpu: Gpu, B: number, T: number, recorded?: RecordedRecompute): StepSettings {
  const compute = chooseComputePath(gpu, config.compute_dtype, model);
  let s: StepSettings = { ...stepSettings(config, B, T, chooseLossChunk(gpu, B * T, model.vocabSize), deviceLossHead(gpu, model), compute.path), computeWhy: compute.why, maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize };
  if (config.gradient_checkpointing === 'auto') {
    const { bytes: budget, from } = recomputeBudget(config.max_memory, gpu);
    const auto = recorded === undefined ? autoRecompute(model, s, budget, from) : resumedAutoRecompute(model, s, budget, from, recorded);
    s = { ...s, recompute: auto.policy, gradientCheckpointing: auto.policy !== 'none', recomputeWhy: auto.why };
  }
  checkpointedLayers(s.recompute!, model.numHiddenLayers);
  return s;
}

/**
 * The run's memory plan for `config` at (B, T) on `gpu` — what `train` and `train --dry-run` both
 * print and the Trainer allocates from — with its dispatch counts (the Trainer built from this
 * plan on a recording device with `gpu`'s adapter, features and limits), unless it breaks a
 * buffer limit. `recorded`: a resumed run's recompute from run.json (runStepSettings).
 */
export async function runPlan(config: TrainConfig, model: Qwen3Config, gpu: Gpu, B: number, T: number, recorded?: RecordedRecompute): Promise<StepPlan> {
  const plan = planStep(model, runStepSettings(config, model, gpu, B, T, recorded));
  // A plan over the device's buffer limits cannot be built, not even on the recording device:
  // checkPlan refuses it, naming the buffer, once its table is printed.
  if (bufferLimitError(plan, gpu.limits)) return plan;
  return withDispatchCounts(plan, await countStepDispatches(gpu, model, plan));
}
