/**
 * prompt-lora-trainer's public API.
 *
 *   const gpu = await Gpu.open();
 *   const model = await Qwen3Model.load(gpu, 'path/to/Qwen3-4B', { base: 'nf4' });
 *   const adapter = await loadLoraAdapter(gpu, 'path/to/adapter', model.config);
 *   const { loss, logitsLast } = await model.forward({ B, T, inputIds, labels }, { adapter, logitsLast: true });
 *   gpu.destroy();
 */
export { Gpu, type GpuOptions, type OptionalFeature } from './kernels/gpu.js';
export type { Tensor, DType } from './kernels/tensor.js';
export { Qwen3Model, type ForwardOptions } from './model/qwen3.js';
export type { Batch } from './batch.js';
export { ForwardProgram, shiftTargets, type ForwardResult, type ForwardShape } from './model/forward.js';
export { loadModelWeights, type LoadOptions } from './model/load.js';
export type { ModelWeights, LayerWeights, BaseFormat } from './model/weights.js';
export { loadLoraAdapter, parseAdapterConfig, peftKey, loraScale, type LoraAdapter, type LoraConfig, type LoraPair } from './model/lora.js';
export { createLoraAdapter } from './model/lora-init.js';
export { readQwen3Config, parseQwen3Config, type Qwen3Config } from './model/config.js';
export { Checkpoint, PROJECTIONS, type Projection } from './model/checkpoint.js';
export { SafetensorsFile } from './model/safetensors.js';
export { SafetensorsWriter } from './model/safetensors-writer.js';
export { QwenTokenizer, type ChatMessage } from './model/tokenizer.js';
export * from './errors.js';
export { Trainer, type TrainerOptions } from './train/trainer.js';
export { planStep, checkPlan, formatPlan, type StepPlan, type StepSettings } from './train/plan.js';
export { LrSchedule } from './train/schedule.js';
export { readPeftAdapter, savePeftAdapter, adapterFromGpu } from './model/peft.js';
export { runExportRequest } from './export/export-command.js';
export { ProgressObserver, type ProgressStream } from './report/progress-observer.js';
export { MetricsJsonlObserver, readMetricsJsonl, type MetricsLine } from './report/metrics-jsonl.js';
export { ReportHtmlObserver, type ReportHtmlOptions } from './report/report-observer.js';
export { createRunObservers, type RunObservers } from './report/run-observers.js';
export { Generator, type GeneratorOptions, type GenerateOptions, type GenerationResult, type StopReason } from './generate/generator.js';
export { Sampler, DEFAULT_SAMPLING, GREEDY, type SamplingOptions } from './generate/sampling.js';
export type { GenerationInput, ChatOptions } from './generate/prompt.js';
