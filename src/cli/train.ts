import { join, resolve } from 'node:path';
import { CONFIG_FLAGS, formatFlags, parseConfigArgs, type FlagSpec } from '../config/args.js';
import { loadConfig } from '../config/load.js';
import { packageRoot } from '../config/paths.js';
import type { TrainConfig } from '../config/schema.js';
import { prepareDataset } from '../data/dataset.js';
import { hubOptionsFromEnv, resolveRepo } from '../data/hub.js';
import { Gpu } from '../kernels/gpu.js';
import { chooseLossChunk } from '../model/forward.js';
import { embeddedConfig, EMBEDDED_MODEL_ID, materializeEmbeddedModel } from '../model/embedded.js';
import { readQwen3Config } from '../model/config.js';
import { createLoraAdapter } from '../model/lora-init.js';
import { Qwen3Model } from '../model/qwen3.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { trainLoop, type LoopResult } from '../train/loop.js';
import { Trainer } from '../train/trainer.js';
import { resolveOptim } from '../train/adamw8bit.js';
import { adapterFromGpu, savePeftAdapter } from '../export/peft.js';
import { checkPlan, formatPlan, guessDeviceMemory, planStep, type StepSettings } from '../train/plan.js';
import { checkResumeConfig } from '../train/checkpoint-config.js';
import { openCheckpoint, resolveResumeDir, type OpenedCheckpoint } from '../train/checkpoint-reader.js';
import { createRunObservers } from '../report/run-observers.js';
import { createRunSampler } from '../generate/run-samples.js';
import { exportRun } from '../export/run-export.js';
import { randomModelFor, readConfigSource } from '../model/random-model.js';
import { Interrupt, INTERRUPT_EXIT_CODE, listenForInterrupt } from '../train/interrupt.js';
import { runDryRun } from './dry-run.js';

/** The flags of `train` besides the shared config flags. */
export const TRAIN_FLAGS: readonly FlagSpec[] = [
  {
    name: 'resume',
    takesValue: true,
    optionalValue: true,
    help: 'continue from a checkpoint: DIR (a checkpoint-<step> folder, or an output_dir holding some), or with no DIR the newest in output_dir',
  },
  {
    name: 'random-weights',
    takesValue: true,
    help: 'train on deterministic random weights at the shape of FILE (a config.json, or a folder holding one), e.g. configs/models/qwen3-4b.json: the same as --set random_weights=true --set model_id=FILE',
  },
];

export const TRAIN_USAGE = `usage: node train.js [--config FILE] [--resume [DIR]] [overrides]

With no --config, runs the embedded default (configs/embedded-default.yaml): a small Qwen3 model the
project creates, the bundled dataset, eval split and early stopping, on any WebGPU adapter.
Checkpoints go to output_dir/checkpoint-<step>/ (save_strategy, save_steps, save_total_limit);
Ctrl-C finishes the current step, writes a checkpoint and exits with 130 (twice: at once).

${formatFlags([...CONFIG_FLAGS, ...TRAIN_FLAGS])}`;

/** The checkpoint named by --resume or resume_from_checkpoint, checked against `config` (reads no tensors). */
async function openResume(request: string | undefined, config: TrainConfig): Promise<OpenedCheckpoint | undefined> {
  if (request === undefined) return undefined;
  const dir = await resolveResumeDir(request, config.output_dir);
  const opened = await openCheckpoint(dir);
  for (const w of checkResumeConfig(opened.config, config, dir)) console.warn(`warning: ${w}`);
  return opened;
}

/** Settings of the memory plan for a config and batch shape. */
export function stepSettings(config: TrainConfig, B: number, T: number, lossChunkTokens: number): StepSettings {
  return {
    batch: B,
    seq: T,
    r: config.lora_r,
    targets: config.lora_target_modules,
    gradientCheckpointing: config.gradient_checkpointing,
    optimizer: /8bit/.test(config.optim) ? 'adamw_8bit' : 'adamw',
    base: config.use_4bit ? 'nf4' : 'full',
    doubleQuant: config.bnb_4bit_use_double_quant,
    lossChunkTokens,
    loraDropout: config.lora_dropout,
  };
}

/** The model folder of model_id: the embedded model (created on first use), a local folder or a Hub download. */
async function resolveModelDir(config: TrainConfig): Promise<string> {
  if (config.model_id === EMBEDDED_MODEL_ID) return materializeEmbeddedModel(resolve('outputs', '.embedded-model'));
  if (config.random_weights) return (await randomModelFor(config.model_id, resolve('outputs', '.random-models'), { log: (line) => console.log(line) })).dir;
  return (await resolveRepo(config.model_id, 'model', hubOptionsFromEnv(process.env), { revision: config.model_revision })).path;
}

export async function runTrain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(TRAIN_USAGE);
    return 0;
  }
  const args = parseConfigArgs(argv, 'train', TRAIN_FLAGS);
  const configPath = args.configPath ?? join(packageRoot(), 'configs', 'embedded-default.yaml');
  const randomWeights = args.flags.get('random-weights')?.[0];
  const overrides = randomWeights === undefined ? args.overrides : { ...args.overrides, set: [...(args.overrides.set ?? []), 'random_weights=true', `model_id=${JSON.stringify(randomWeights)}`] };
  const { config, warnings } = loadConfig(configPath, overrides);
  for (const w of warnings) console.warn(`warning: ${w}`);
  console.log(`config: ${configPath}${args.configPath ? '' : ' (embedded default)'}`);
  // `--resume` alone means the newest checkpoint in output_dir; the flag wins over the config key.
  const resumeFlag = args.flags.get('resume');
  const resume = await openResume(resumeFlag ? (resumeFlag[0] ?? 'latest') : (config.resume_from_checkpoint ?? undefined), config);

  if (args.dryRun) {
    await runDryRun(config, {
      memoryPlan: async (c, shape) => {
        const model =
          c.model_id === EMBEDDED_MODEL_ID ? embeddedConfig() : c.random_weights ? (await readConfigSource(c.model_id)).config : await readQwen3Config(await resolveModelDir(c));
        return formatPlan(planStep(model, stepSettings(c, shape.B, shape.T, 1024)));
      },
    });
    return 0;
  }

  const modelDir = await resolveModelDir(config);
  const tokenizer = await QwenTokenizer.load(modelDir);
  const data = await prepareDataset(config, tokenizer, hubOptionsFromEnv(process.env));
  console.log(`data: ${data.train.examples.length} train examples; ${data.evalDescription}`);

  const gpu = await Gpu.open();
  let listening: { dispose: () => void } | undefined;
  try {
    console.log(`device: ${gpu.describe()}`);
    const modelConfig = await readQwen3Config(modelDir);
    const B = config.per_device_train_batch_size;
    const T = config.max_seq_length;
    const plan = planStep(modelConfig, stepSettings(config, B, T, chooseLossChunk(gpu, B * T, modelConfig.vocabSize)));
    console.log(formatPlan(plan));
    checkPlan(plan, { ...gpu.limits, memoryBytes: guessDeviceMemory(gpu.adapterInfo.description) });

    const t0 = performance.now();
    const model = await Qwen3Model.load(gpu, modelDir, { base: config.use_4bit ? 'nf4' : 'full', doubleQuant: config.bnb_4bit_use_double_quant });
    console.log(`model: ${modelDir} loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s (${config.use_4bit ? 'NF4' : 'full-precision'} base)`);
    const adapter = createLoraAdapter(
      gpu,
      modelConfig,
      { r: config.lora_r, alpha: config.lora_alpha, dropout: config.lora_dropout, targetModules: config.lora_target_modules, useRslora: config.use_rslora },
      config.seed,
    );

    const trainer = await Trainer.create(gpu, model, adapter, {
      B,
      T,
      checkpointing: config.gradient_checkpointing,
      optimizer: resolveOptim(config.optim),
      hyper: { beta1: config.adam_beta1, beta2: config.adam_beta2, eps: config.adam_epsilon, weightDecay: config.weight_decay },
      maxGradNorm: config.max_grad_norm,
      seed: config.seed,
    });
    const pad = tokenizer.padTokenId ?? tokenizer.eosTokenId;
    const interrupt = new Interrupt();
    // Listening until the command returns: a second Ctrl-C while the checkpoint or the adapter is
    // being written still quits at once (writers leave only temporary names behind).
    listening = listenForInterrupt(process, interrupt, {
      onFirst: () => console.log('interrupt: finishing the current step, then writing a checkpoint (Ctrl-C again quits at once)'),
      onSecond: () => process.exit(INTERRUPT_EXIT_CODE),
    });
    const sampler = await createRunSampler(gpu, model, trainer.lora, tokenizer, config);
    const seeing = createRunObservers(config.output_dir, process.stdout);
    // Every line goes through the progress observer: on a terminal it lands above the bar.
    const log = (line: string): void => seeing.progress.message(line);
    let result: LoopResult;
    try {
      result = await trainLoop(gpu, model, trainer, config, { train: data.train.examples, eval: data.eval.examples }, pad, {
        log,
        observers: seeing.observers,
        samples: sampler?.sample,
        interrupt,
        resume,
        plannedGpuBytes: plan.total,
      });
    } finally {
      sampler?.destroy();
    }
    if (result.reason === 'interrupted') {
      trainer.destroy();
      console.log(`interrupted at step ${result.steps}: checkpoint ${result.lastCheckpoint}; continue with: node train.js --resume ${result.lastCheckpoint}`);
      return INTERRUPT_EXIT_CODE;
    }
    const adapterDir = resolve(config.output_dir, 'adapter');
    await savePeftAdapter(adapterDir, await adapterFromGpu(gpu, trainer.lora, modelConfig), { baseModel: config.model_id, overwrite: true });
    trainer.destroy();
    console.log(`adapter (PEFT layout, ${result.bestStep !== undefined && config.load_best_model_at_end ? `best: step ${result.bestStep}` : `step ${result.steps}`}) → ${adapterDir}`);
    const exported = await exportRun({ config, modelDir, adapterDir, outDir: config.output_dir, log });
    console.log(`report: ${resolve(config.output_dir, 'report.html')} (plots, sample generations); metrics: ${resolve(config.output_dir, 'metrics.jsonl')}`);
    for (const line of exported.summary) console.log(line);
    return 0;
  } finally {
    listening?.dispose();
    gpu.destroy();
  }
}
