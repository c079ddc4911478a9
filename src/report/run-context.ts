import type { TrainConfig } from '../config/schema.js';
import { fusedHeadUnsupported } from '../kernels/cross-entropy-fused.js';
import type { Gpu } from '../kernels/gpu.js';
import { EMBEDDED_MODEL_ID } from '../model/embedded.js';
import type { LossHeadMode } from '../model/loss-head.js';
import { tensorCoreUnsupportedReason, type ComputePath } from '../model/compute-path.js';
import { formatDispatchCounts, type StepPlan } from '../train/plan.js';
import { describeRecompute } from '../train/recompute.js';
import { formatBytes } from './format-units.js';
import { describeRun } from './run-description.js';
import type { RunObserverOptions } from './run-observers.js';

/**
 * The CLI's one call to describe a run for the observers (start block, report.html, TensorBoard):
 * the config, the device, the compute path this device takes, and the memory plan's totals.
 */
export function runObserverOptions(config: TrainConfig, gpu: Gpu, plan: StepPlan): RunObserverOptions {
  return {
    description: describeRun({ config, device: gpu.describe(), computePath: computePath(gpu, config, plan.settings.lossChunkTokens, plan.settings.lossHead ?? 'chunked', plan.settings.compute), checkpointing: planCheckpointing(plan), memoryPlan: memoryPlanSummary(plan), embedded: config.model_id === EMBEDDED_MODEL_ID }),
    reportTo: config.report_to,
    hyperparameters: config,
  };
}

/**
 * Which kernels the step runs on this device: the base projections on tensor cores (the plan's
 * compute path, src/model/compute-path.ts: f16 subgroup matrices, f32 accumulation) or tiled f32
 * WGSL matmuls (the base dequantised inside them; with why when compute_dtype is auto), and the loss head the plan was made for (StepSettings.lossHead, 'chunked' by default as in
 * planStep): fused (logits never stored; CPU adapters with subgroups of 8 and a bf16 lm_head) or
 * chunked (logits of `lossChunkTokens` positions at a time).
 */
export function computePath(gpu: Gpu, config: TrainConfig, lossChunkTokens: number, lossHead: LossHeadMode, compute: ComputePath = 'f32'): string {
  const why = compute === 'f32' && config.compute_dtype === 'auto' ? tensorCoreUnsupportedReason(gpu) ?? 'the model\'s projection widths' : undefined;
  const base =
    compute === 'tensor-cores'
      ? `projections on tensor cores (${config.use_4bit ? 'NF4 dequantised to ' : ''}f16 subgroup matrices, rows scaled into f16 range, f32 accumulation; LoRA, attention, norms f32)`
      : `${config.use_4bit ? 'NF4 dequantised in tiled f32 WGSL matmuls' : 'tiled f32 WGSL matmuls'}${why ? ` (no tensor cores: ${why})` : config.compute_dtype === 'float32' ? ' (compute_dtype: float32)' : ''}`;
  if (lossHead === 'fused') return `${base}; loss head fused (CPU adapter, logits never stored)`;
  const unsupported = fusedHeadUnsupported(gpu);
  return `${base}; loss head chunked, ${lossChunkTokens} tokens of logits at a time${unsupported ? ` (${unsupported})` : ''}`;
}

/** Which layers the plan recomputes, in words ("on", "off", "layers 0..k−1 of L"). */
export function planCheckpointing(plan: StepPlan): string {
  return describeRecompute(plan.settings.recompute ?? (plan.settings.gradientCheckpointing ? 'full' : 'none'), plan.layers);
}

/** "5.70 GiB planned: weights 2.10 GiB, lora …" from the plan's totals. */
export function memoryPlanSummary(plan: StepPlan): string {
  const parts = Object.entries(plan.totals).filter(([, b]) => b > 0).map(([cat, b]) => `${cat} ${formatBytes(b)}`);
  const dispatches = plan.dispatches ? `; ${formatDispatchCounts(plan.dispatches)}` : '';
  return `${formatBytes(plan.total)} planned (${parts.join(', ')}); ${(plan.trainable / 1e6).toFixed(2)} M trainable parameters${dispatches}`;
}
