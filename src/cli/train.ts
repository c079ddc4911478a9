import { join, resolve } from 'node:path';
import { CONFIG_FLAGS, formatFlags, parseConfigArgs } from '../config/args.js';
import { loadConfig } from '../config/load.js';
import { packageRoot } from '../config/paths.js';
import type { TrainConfig } from '../config/schema.js';
import { planBatches, iterateBatches } from '../data/batching.js';
import { prepareDataset } from '../data/dataset.js';
import { hubOptionsFromEnv, resolveRepo } from '../data/hub.js';
import { Gpu } from '../kernels/gpu.js';
import { chooseLossChunk } from '../model/forward.js';
import { embeddedConfig, EMBEDDED_MODEL_ID, materializeEmbeddedModel } from '../model/embedded.js';
import { readQwen3Config } from '../model/config.js';
import { createLoraAdapter } from '../model/lora-init.js';
import { Qwen3Model } from '../model/qwen3.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { padBatch } from '../train/pad-batch.js';
import { checkPlan, formatPlan, guessDeviceMemory, planStep, type StepSettings } from '../train/plan.js';
import { runDryRun } from './dry-run.js';

export const TRAIN_USAGE = `usage: node train.js [--config FILE] [overrides]

With no --config, runs the embedded default (configs/embedded-default.yaml): a small Qwen3 model the
project creates, the bundled dataset, eval split and early stopping, on any WebGPU adapter.

${formatFlags(CONFIG_FLAGS)}`;

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
  return (await resolveRepo(config.model_id, 'model', hubOptionsFromEnv(process.env), { revision: config.model_revision })).path;
}

export async function runTrain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(TRAIN_USAGE);
    return 0;
  }
  const args = parseConfigArgs(argv, 'train');
  const configPath = args.configPath ?? join(packageRoot(), 'configs', 'embedded-default.yaml');
  const { config, warnings } = loadConfig(configPath, args.overrides);
  for (const w of warnings) console.warn(`warning: ${w}`);
  console.log(`config: ${configPath}${args.configPath ? '' : ' (embedded default)'}`);

  if (args.dryRun) {
    await runDryRun(config, {
      memoryPlan: async (c, shape) => {
        const model = c.model_id === EMBEDDED_MODEL_ID ? embeddedConfig() : await readQwen3Config(await resolveModelDir(c));
        return formatPlan(planStep(model, stepSettings(c, shape.B, shape.T, 1024)));
      },
    });
    return 0;
  }

  const modelDir = await resolveModelDir(config);
  const tokenizer = await QwenTokenizer.load(modelDir);
  const data = await prepareDataset(config, tokenizer, hubOptionsFromEnv(process.env));
  console.log(`data: ${data.train.examples.length} train examples; eval: ${data.evalDescription}`);

  const gpu = await Gpu.open();
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

    // Evaluation of the starting point (the base model: a fresh adapter's B is zero).
    const evalB = config.per_device_eval_batch_size;
    const pad = tokenizer.padTokenId ?? tokenizer.eosTokenId;
    const evalPlan = planBatches(data.eval.examples, { batchSize: evalB, maxSeqLength: T, packing: false, groupByLength: false, seed: config.seed, padTokenId: pad, fixedLength: true });
    const program = model.program({ B: evalB, T }, adapter);
    let sum = 0;
    let count = 0;
    for (const batch of iterateBatches(data.eval.examples, evalPlan, 0, 0)) {
      const r = await program.run(padBatch(batch, evalB, T, pad));
      if (r.targets > 0) {
        sum += r.loss * r.targets;
        count += r.targets;
      }
    }
    program.destroy();
    console.log(`eval loss before training: ${(sum / count).toFixed(4)} over ${count} target tokens`);
    console.log('training: the QLoRA training step is not implemented yet (issue 3); this run stops after the evaluation.');
    return 0;
  } finally {
    gpu.destroy();
  }
}
