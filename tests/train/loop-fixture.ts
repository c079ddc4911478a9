import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config/load.js';
import type { ConfigInput, TrainConfig } from '../../src/config/schema.js';
import type { TokenizedExample } from '../../src/data/render.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { createLoraAdapter } from '../../src/model/lora-init.js';
import { parseQwen3Config } from '../../src/model/config.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { RandomQwen3Source } from '../../src/model/random-source.js';
import { resolveOptim } from '../../src/train/adamw8bit.js';
import type { CheckpointRecord, EvalRecord, RunEnd, RunObserver, RunStart, StepRecord } from '../../src/train/events.js';
import { createTrainKernels, type TrainKernels } from '../../src/train/kernels.js';
import { trainLoop, type LoopOptions, type LoopResult } from '../../src/train/loop.js';
import { Trainer } from '../../src/train/trainer.js';
import { Rng } from '../helpers/random.js';

/**
 * Small training runs of the loop with synthetic token data, for the loop, resume and robustness
 * tests. The model is the fixture's architecture (D = 32, 2 layers, 4/2 heads of 16, F = 96) with
 * random weights and a SMALL vocabulary (V = 512): on lavapipe the fixture's real 151,936-token
 * lm_head costs about a second per 16-token micro-batch, which would make the 80 micro-batches of
 * the resume test minutes long; nothing a checkpoint holds depends on V. Every run is tiny
 * (B = 1, T = 16).
 */
export const TINY_VOCAB = 512;

/** The fixture's config.json with V = 512. */
const TINY_CONFIG_JSON = {
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 32,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: TINY_VOCAB,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  max_position_embeddings: 4096,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  attention_bias: false,
  torch_dtype: 'bfloat16',
};

/** The records a run sent to its observers, in order. */
export class RecordingObserver implements RunObserver {
  readonly starts: RunStart[] = [];
  readonly steps: StepRecord[] = [];
  readonly evals: EvalRecord[] = [];
  readonly checkpoints: CheckpointRecord[] = [];
  readonly ends: RunEnd[] = [];
  constructor(private readonly onStepHook?: (r: StepRecord) => void) {}
  onStart(r: RunStart): void {
    this.starts.push(r);
  }
  onStep(r: StepRecord): void {
    this.steps.push(r);
    this.onStepHook?.(r);
  }
  onEval(r: EvalRecord): void {
    this.evals.push(r);
  }
  onCheckpoint(r: CheckpointRecord): void {
    this.checkpoints.push(r);
  }
  onEnd(r: RunEnd): void {
    this.ends.push(r);
  }
}

/** Synthetic examples: random ids of length 5 … T, the first 3 tokens a "prompt" (no loss). */
export function syntheticExamples(n: number, T: number, vocab: number, seed: number): TokenizedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, row) => {
    const len = rng.int(5, T + 1);
    const ids = Int32Array.from({ length: len }, () => rng.int(0, vocab));
    const loss = Uint8Array.from({ length: len }, (_, j) => (j >= 3 ? 1 : 0));
    return { ids, loss, fullLength: len, truncated: false, split: 'train', file: 'synthetic', row } as TokenizedExample;
  });
}

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `plt-${tag}-`));
}

/** The test config: every key explicit that decides the numbers. */
export function tinyConfig(outputDir: string, overrides: Partial<ConfigInput> = {}): TrainConfig {
  const input: ConfigInput = {
    model_id: 'random:tiny-v512',
    output_dir: outputDir,
    max_seq_length: 16,
    per_device_train_batch_size: 1,
    per_device_eval_batch_size: 2,
    gradient_accumulation_steps: 2,
    max_steps: 20,
    learning_rate: 1e-2,
    lr_scheduler_type: 'cosine',
    warmup_steps: 2,
    lora_r: 4,
    lora_alpha: 8,
    lora_dropout: 0.1,
    lora_target_modules: 'all-linear',
    optim: 'adamw_torch',
    max_grad_norm: 1,
    use_4bit: true,
    gradient_checkpointing: true,
    packing: false,
    seed: 5,
    logging_steps: 1,
    eval_strategy: 'steps',
    eval_steps: 4,
    save_strategy: 'steps',
    save_steps: 8,
    save_total_limit: 1,
    load_best_model_at_end: true,
    ...overrides,
  };
  return resolveConfig(input, 'test config').config;
}

/** The fixture model and its training kernels, loaded once per test file. */
export class TinySetup {
  private constructor(
    readonly gpu: Gpu,
    readonly model: Qwen3Model,
    readonly kernels: TrainKernels,
  ) {}

  static async create(gpu: Gpu): Promise<TinySetup> {
    const source = new RandomQwen3Source(parseQwen3Config(TINY_CONFIG_JSON, 'tiny test model'), 2026, 0.2);
    const model = await Qwen3Model.load(gpu, source, { base: 'nf4' });
    return new TinySetup(gpu, model, await createTrainKernels(gpu, model.config, model.kernels));
  }

  /** A fresh trainer for `config`; `initSeed` picks the LoRA initialisation. */
  async trainer(config: TrainConfig, initSeed: number): Promise<Trainer> {
    const adapter = createLoraAdapter(
      this.gpu,
      this.model.config,
      { r: config.lora_r, alpha: config.lora_alpha, dropout: config.lora_dropout, targetModules: config.lora_target_modules, useRslora: config.use_rslora },
      initSeed,
    );
    return Trainer.create(
      this.gpu,
      this.model,
      adapter,
      {
        B: config.per_device_train_batch_size,
        T: config.max_seq_length,
        checkpointing: config.gradient_checkpointing,
        optimizer: resolveOptim(config.optim),
        hyper: { beta1: config.adam_beta1, beta2: config.adam_beta2, eps: config.adam_epsilon, weightDecay: config.weight_decay },
        maxGradNorm: config.max_grad_norm,
        seed: config.seed,
      },
      this.kernels,
    );
  }

  /**
   * Runs the loop with a fresh trainer; returns its result, the records, the final parameters by
   * PEFT key, and `lines` logged. `prepare` may touch the trainer first (e.g. poison a buffer).
   */
  async run(
    config: TrainConfig,
    data: { train: readonly TokenizedExample[]; eval: readonly TokenizedExample[] },
    options: Partial<LoopOptions> & { initSeed?: number; prepare?: (t: Trainer) => void; onStep?: (r: StepRecord, t: Trainer) => void } = {},
  ): Promise<{ result: LoopResult; records: RecordingObserver; params: Map<string, Float32Array>; lines: string[] }> {
    const trainer = await this.trainer(config, options.initSeed ?? 1);
    const records = new RecordingObserver((r) => options.onStep?.(r, trainer));
    const lines: string[] = [];
    try {
      options.prepare?.(trainer);
      const result = await trainLoop(this.gpu, this.model, trainer, config, data, 0, {
        ...options,
        log: (l) => lines.push(l),
        observers: [records, ...(options.observers ?? [])],
      });
      return { result, records, params: await trainer.readParameters(), lines };
    } finally {
      trainer.destroy();
    }
  }
}
