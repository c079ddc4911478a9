import type { TrainConfig } from '../config/schema.js';
import { fusedHeadUnsupported } from '../kernels/cross-entropy-fused.js';
import type { Gpu } from '../kernels/gpu.js';
import { EMBEDDED_MODEL_ID } from '../model/embedded.js';
import type { StepPlan } from '../train/plan.js';
import { describeRecompute } from '../train/recompute.js';
import { formatBytes } from './format-units.js';
import { describeRun } from './run-description.js';
import type { RunObserverOptions } from './run-observers.js';

/**
 * The CLI's one call to describe a run for the observers (start block, report.html, TensorBoard):
 * the config, the device, the compute path this device takes, and the memory plan's totals.
 */
export function runObserverOptions(config: TrainConfig, gpu: Gpu, plan: StepPlan, lossChunkTokens: number): RunObserverOptions {
  return {
    description: describeRun({ config, device: gpu.describe(), computePath: computePath(gpu, config, lossChunkTokens, plannedLossHead(plan)), checkpointing: planCheckpointing(plan), memoryPlan: memoryPlanSummary(plan), embedded: config.model_id === EMBEDDED_MODEL_ID }),
    reportTo: config.report_to,
    hyperparameters: config,
  };
}

/**
 * Which kernels the step runs on this device: tiled f32 WGSL matmuls (the base dequantised inside
 * them), and the loss head fused (logits never stored; CPU adapters with subgroups of 8 and a bf16
 * lm_head) or chunked (logits of `lossChunkTokens` positions at a time).
 */
export function computePath(gpu: Gpu, config: TrainConfig, lossChunkTokens: number, lossHead?: string): string {
  const base = config.use_4bit ? 'NF4 dequantised in tiled f32 WGSL matmuls' : 'tiled f32 WGSL matmuls';
  const unsupported = fusedHeadUnsupported(gpu);
  const chunked = `chunked, ${lossChunkTokens} tokens of logits at a time`;
  if (lossHead === 'fused') return `${base}; loss head fused (CPU adapter, logits never stored)`;
  if (lossHead === 'chunked') return `${base}; loss head ${chunked}${unsupported ? ` (${unsupported})` : ''}`;
  return `${base}; loss head ${unsupported === undefined ? 'fused where the lm_head is bf16 (CPU adapter, logits never stored)' : `${chunked} (${unsupported})`}`;
}

/** Which layers the plan recomputes, in words ("on", "off", "layers 0..k−1 of L"). */
export function planCheckpointing(plan: StepPlan): string {
  return describeRecompute(plan.settings.recompute ?? (plan.settings.gradientCheckpointing ? 'full' : 'none'), plan.layers);
}

/** The loss head the memory plan was made for, where the plan records it (StepSettings.lossHead). */
function plannedLossHead(plan: StepPlan): string | undefined {
  return plan.settings.lossHead;
}

/** "5.70 GiB planned: weights 2.10 GiB, lora …" from the plan's totals. */
export function memoryPlanSummary(plan: StepPlan): string {
  const parts = Object.entries(plan.totals).filter(([, b]) => b > 0).map(([cat, b]) => `${cat} ${formatBytes(b)}`);
  return `${formatBytes(plan.total)} planned (${parts.join(', ')}); ${(plan.trainable / 1e6).toFixed(2)} M trainable parameters`;
}
