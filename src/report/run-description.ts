import type { TrainConfig } from '../config/schema.js';
import type { RunStart } from '../train/events.js';
import { formatExp } from './format-units.js';

/**
 * What a run is, in words: the resolved hyperparameters, the device, the compute path and the memory
 * plan. The CLI builds it once before training (`describeRun`); the start-of-run block
 * (start-block.ts) and report.html show it with the loop's RunStart (steps per epoch, total steps),
 * so the terminal and the report say the same thing.
 */
export interface RunDescription {
  readonly model: string;
  readonly dataset: string;
  readonly lora: string;
  readonly learningRate: string;
  readonly epochs: string;
  readonly optimiser: string;
  readonly precision: string;
  readonly computePath: string;
  readonly device: string;
  readonly memoryPlan: string;
  /** The model is the embedded random-weight model: samples are noise by design. */
  readonly embedded: boolean;
}

export interface DescribeRunInput {
  readonly config: TrainConfig;
  readonly device: string;
  /** e.g. "f32 WGSL matmuls (NF4 dequantised in the kernel); loss head fused on the CPU adapter". */
  readonly computePath: string;
  /** Which layers are recomputed, as the plan has it: "on", "off" or "layers 0..k−1 of L" (describeRecompute). */
  readonly checkpointing: string;
  /** e.g. "5.70 GiB planned (weights 2.1 GiB, …)". */
  readonly memoryPlan: string;
  readonly embedded: boolean;
}

export function describeRun(input: DescribeRunInput): RunDescription {
  const c = input.config;
  const kwargs = Object.entries(c.lr_scheduler_kwargs).map(([k, v]) => `${k}=${v}`).join(', ');
  return {
    model: c.model_id + (c.random_weights ? ' (random weights at its shape)' : input.embedded ? ' (embedded, random weights)' : ''),
    dataset: c.dataset_id,
    lora: `r=${c.lora_r}, alpha=${c.lora_alpha}${c.use_rslora ? ' (rsLoRA)' : ''}, dropout ${c.lora_dropout}, targets ${c.lora_target_modules.join(', ')}`,
    learningRate: `${formatExp(c.learning_rate)}, ${c.lr_scheduler_type}${kwargs ? ` (${kwargs})` : ''} schedule, weight decay ${c.weight_decay}`,
    epochs: c.max_steps > 0 ? `max_steps ${c.max_steps}` : `${c.num_train_epochs}`,
    optimiser: `${c.optim} (β1 ${c.adam_beta1}, β2 ${c.adam_beta2}, ε ${c.adam_epsilon}), max grad norm ${c.max_grad_norm}`,
    precision: `${c.use_4bit ? `NF4${c.bnb_4bit_use_double_quant ? ' + double quant' : ''}` : 'full-precision'} base, gradient checkpointing ${input.checkpointing}`,
    computePath: input.computePath,
    device: input.device,
    memoryPlan: input.memoryPlan,
    embedded: input.embedded,
  };
}

/** Tokens one optimiser step trains on (padding included): batch × accumulation × sequence length. */
export function tokensPerStep(start: RunStart): number {
  return start.batch * start.gradientAccumulation * start.seqLength;
}

/** The rows the start block and report.html show, in order. */
export function runRows(d: RunDescription, start: RunStart): [string, string][] {
  return [
    ['model', d.model],
    ['dataset', d.dataset],
    ['LoRA', d.lora],
    ['learning rate', d.learningRate],
    ['effective batch', `${start.batch} × ${start.seqLength} tokens × ${start.gradientAccumulation} accumulation = ${tokensPerStep(start)} tokens per optimiser step`],
    ['sequence length', `${start.seqLength}`],
    ['steps', `${start.stepsPerEpoch} per epoch, ${start.totalSteps} total, ${start.warmupSteps} warm-up; epochs ${d.epochs}`],
    ['optimiser', d.optimiser],
    ['precision', d.precision],
    ['compute path', d.computePath],
    ['device', d.device],
    ['memory plan', d.memoryPlan],
  ];
}
