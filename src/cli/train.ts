import { dirname, join, resolve } from 'node:path';
import { CONFIG_FLAGS, formatFlags, parseConfigArgs, type FlagSpec } from '../config/args.js';
import { loadConfig, resolveConfig, type LoadedConfig } from '../config/load.js';
import { resumeCommand } from '../config/command-line.js';
import { packageRoot } from '../config/paths.js';
import type { TrainConfig } from '../config/schema.js';
import { prepareDataset } from '../data/dataset.js';
import { hubOptionsFromEnv } from '../data/hub.js';
import { removeStaleTemporaries } from '../io/temp-name.js';
import { Gpu } from '../kernels/gpu.js';
import { embeddedConfig, EMBEDDED_MODEL_ID } from '../model/embedded.js';
import { readQwen3Config } from '../model/config.js';
import { createLoraAdapter } from '../model/lora-init.js';
import { describeComputePath } from '../model/compute-path.js';
import { Qwen3Model } from '../model/qwen3.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { trainLoop, type LoopResult } from '../train/loop.js';
import { Trainer } from '../train/trainer.js';
import { resolveOptim } from '../train/adamw8bit.js';
import { adapterFromGpu, savePeftAdapter } from '../model/peft.js';
import { checkPlan, formatPlan, guessDeviceMemory, type StepPlan } from '../train/plan.js';
import { runPlan, stepSettings } from '../train/step-settings.js';
import { checkResumeConfig } from '../train/checkpoint-config.js';
import { openCheckpoint, type OpenedCheckpoint } from '../train/checkpoint-reader.js';
import { CHECKPOINT_FILES } from '../train/checkpoint-state.js';
import { ConfigError } from '../errors.js';
import { claimRunFolder, projectCommit, readRunRecord, resolveResumeDir, RUN_RECORD_FORMAT, withRecompute, writeRendering, writeRunFolder, writeRunRecord, type RunRecord } from '../run/run-folder.js';
import { latestRecompute, recordRecompute } from '../train/recompute-record.js';
import { resolveModelDir as resolveModelFolder } from '../run/model-source.js';
import { createRunObservers } from '../report/run-observers.js';
import { runObserverOptions } from '../report/run-context.js';
import { embeddedNotice } from '../report/embedded-notice.js';
import { createRunSampler } from '../generate/run-samples.js';
import { exportRun } from '../export/run-export.js';
import { redoExportCommand } from '../export/redo-command.js';
import { checkExportSpace } from '../export/space-check.js';
import { readConfigSource } from '../model/random-model.js';
import { Interrupt, INTERRUPT_EXIT_CODE, listenForInterrupt } from '../train/interrupt.js';
import { runDryRun } from './dry-run.js';
import { embeddedDefaultConfigPath } from './train-defaults.js';

/** The flags of `train` besides the shared config flags. */
export const TRAIN_FLAGS: readonly FlagSpec[] = [
  {
    name: 'resume',
    takesValue: true,
    optionalValue: true,
    help: 'continue a run: DIR (a checkpoint-<step> folder, or a run\'s output_dir) with that run\'s config and folder, or with no DIR the newest checkpoint of the run in output_dir',
  },
  {
    name: 'overwrite',
    takesValue: false,
    help: 'start afresh in an output_dir holding another run: remove its checkpoints, metrics, report and exports first (overwrite_output_dir: true)',
  },
  {
    name: 'gpu-robustness',
    takesValue: false,
    help: "turn on Dawn's robustness transform (every buffer access clamped into bounds in each shader; off by default, as it slows the tensor-core kernels by up to a third): to tell a kernel's out-of-bounds access from another GPU fault",
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

/**
 * The config of the run and the checkpoint to resume. `--resume DIR` continues that run: its
 * config.yaml (the checkpoint's) with its folder as output_dir, the command line's overrides on top;
 * an output_dir other than the run's is refused, and checkResumeConfig refuses shape and data changes
 * (naming the key) and warns for each other changed key. `--resume` alone (or
 * resume_from_checkpoint) reads the config as usual and takes the run recorded in its output_dir.
 */
async function loadRunConfig(args: ReturnType<typeof parseConfigArgs>, overrides: Parameters<typeof loadConfig>[1]): Promise<{ loaded: Omit<LoadedConfig, 'configPath'>; label: string; resume?: OpenedCheckpoint }> {
  const resumeFlag = args.flags.get('resume');
  const explicit = resumeFlag?.[0];
  if (explicit !== undefined) {
    const dir = await resolveResumeDir(explicit, explicit);
    const opened = await openCheckpoint(dir);
    const runDir = dirname(dir);
    const loaded =
      args.configPath !== undefined
        ? loadConfig(args.configPath, overrides)
        : resolveConfig({ ...opened.config, output_dir: runDir, resume_from_checkpoint: null }, join(dir, CHECKPOINT_FILES.config), overrides);
    if (resolve(loaded.config.output_dir) !== resolve(runDir)) {
      throw new ConfigError(
        `--resume ${explicit}: output_dir is ${JSON.stringify(loaded.config.output_dir)} but the run being resumed lives in ${JSON.stringify(runDir)}; a resumed run stays in its folder. Leave out --output-dir (and output_dir), or start a new run without --resume.`,
      );
    }
    const warnings = [...loaded.warnings, ...checkResumeConfig(opened.config, loaded.config, dir)];
    return { loaded: { ...loaded, warnings }, label: args.configPath ?? `${join(dir, CHECKPOINT_FILES.config)} (the run being resumed)`, resume: opened };
  }
  const configPath = args.configPath ?? embeddedDefaultConfigPath();
  const loaded = loadConfig(configPath, overrides);
  const label = `${configPath}${args.configPath ? '' : ' (embedded default)'}`;
  const request = resumeFlag ? 'latest' : (loaded.config.resume_from_checkpoint ?? undefined);
  if (request === undefined) return { loaded, label };
  const dir = await resolveResumeDir(request, loaded.config.output_dir);
  const opened = await openCheckpoint(dir);
  return { loaded: { ...loaded, warnings: [...loaded.warnings, ...checkResumeConfig(opened.config, loaded.config, dir)] }, label, resume: opened };
}

/** Settings of the memory plan for a config and batch shape (src/train/step-settings.ts). */
export { stepSettings };

/**
 * What both the run and --dry-run print of the plan: the table, then checkPlan's note (checkPlan
 * throws, after the table is out, for what cannot fit).
 */
export function printPlan(plan: StepPlan, gpu: Gpu, out: (line: string) => void): void {
  out(formatPlan(plan));
  out(`compute path: ${planComputePath(plan)}`);
  if (plan.settings.recomputeWhy) out(`gradient checkpointing: ${plan.settings.recomputeWhy}`);
  out(checkPlan(plan, { ...gpu.limits, memoryBytes: guessDeviceMemory(gpu.adapterInfo) }).note);
}

/** The plan's compute path in words, with why (compute_dtype and what the adapter offers). */
function planComputePath(plan: StepPlan): string {
  const s = plan.settings;
  return `${describeComputePath(s.compute ?? 'f32')}${s.computeWhy ? ` (${s.computeWhy})` : ''}`;
}

/** The model folder of model_id (src/run/model-source.ts), logging what it creates. */
function resolveModelDir(config: TrainConfig): Promise<string> {
  return resolveModelFolder(config, (line) => console.log(line));
}

export async function runTrain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(TRAIN_USAGE);
    return 0;
  }
  const args = parseConfigArgs(argv, 'train', TRAIN_FLAGS);
  const robustness = args.flags.has('gpu-robustness');
  const randomWeights = args.flags.get('random-weights')?.[0];
  const overrides = randomWeights === undefined ? args.overrides : { ...args.overrides, set: [...(args.overrides.set ?? []), 'random_weights=true', `model_id=${JSON.stringify(randomWeights)}`] };
  const { loaded, label, resume } = await loadRunConfig(args, overrides);
  const { config, warnings } = loaded;
  for (const w of warnings) console.warn(`warning: ${w}`);
  console.log(`config: ${label}`);

  if (args.dryRun) {
    // `--resume … --dry-run` plans as the resumed run would: with the recompute its run.json records.
    const ran = resume ? await readRunRecord(config.output_dir) : undefined;
    const recorded = ran ? latestRecompute(ran) : undefined;
    await runDryRun(config, {
      memoryPlan: async (c) => {
        const model =
          c.model_id === EMBEDDED_MODEL_ID ? embeddedConfig() : c.random_weights ? (await readConfigSource(c.model_id)).config : await readQwen3Config(await resolveModelDir(c));
        const gpu = await Gpu.open({ robustness });
        try {
          // The run's step is built for (per_device_train_batch_size, max_seq_length) whatever the longest batch: plan that.
          const lines: string[] = [];
          try {
            printPlan(await runPlan(c, model, gpu, c.per_device_train_batch_size, c.max_seq_length, recorded), gpu, (l) => lines.push(l));
          } catch (e) {
            for (const l of lines) console.log(l);
            throw e;
          }
          return lines.join('\n');
        } finally {
          gpu.destroy();
        }
      },
    });
    return 0;
  }

  // Ctrl-C before training starts (data preparation, model download and loading): nothing to save, exit 130 at once.
  const beforeTraining = listenForInterrupt(process, new Interrupt(), { onFirst: () => exitInterrupted('before training started'), onSecond: () => exitInterrupted('before training started') });
  await removeStaleTemporaries(config.output_dir); // what a killed earlier run left (checkpoints, adapter, exports, report)
  if (!resume) await claimRunFolder(config.output_dir, args.flags.has('overwrite') || config.overwrite_output_dir, (line) => console.log(line));
  const modelDir = await resolveModelDir(config);
  const now = new Date().toISOString();
  const earlier = resume ? await readRunRecord(config.output_dir) : undefined;
  const record: RunRecord = {
    format: RUN_RECORD_FORMAT,
    started_at: earlier?.started_at ?? resume?.state.savedAt ?? now,
    model_id: config.model_id,
    model_dir: resolve(modelDir),
    model_revision: config.model_revision,
    dataset_id: config.dataset_id,
    dataset_revision: config.dataset_revision,
    project_commit: projectCommit(packageRoot()),
    resumes: [...(earlier?.resumes ?? []), ...(resume ? [{ at: now, from: resume.dir }] : [])],
    ...(earlier?.recompute !== undefined ? { recompute: earlier.recompute } : {}),
  };
  await writeRunFolder(config.output_dir, config, record);
  const tokenizer = await QwenTokenizer.load(modelDir);
  const data = await prepareDataset(config, tokenizer, hubOptionsFromEnv(process.env));
  console.log(`data: ${data.train.examples.length} train examples; ${data.evalDescription}`);

  const gpu = await Gpu.open({ robustness });
  let listening: { dispose: () => void } | undefined;
  try {
    console.log(`device: ${gpu.describe()}${gpu.robustness ? '; Dawn robustness on (--gpu-robustness)' : ''}`);
    const modelConfig = await readQwen3Config(modelDir);
    const B = config.per_device_train_batch_size;
    const T = config.max_seq_length;
    // A resumed run keeps the recompute its run.json records where it fits here (src/train/auto-recompute.ts).
    const plan = await runPlan(config, modelConfig, gpu, B, T, earlier ? latestRecompute(earlier) : undefined);
    printPlan(plan, gpu, (l) => console.log(l));
    await writeRunRecord(config.output_dir, withRecompute(record, recordRecompute(config.gradient_checkpointing, plan.settings, modelConfig.numHiddenLayers, gpu.describe()), resume !== undefined));

    await checkExportSpace(config.output_dir, modelDir, config); // the configured export must fit before training starts
    const t0 = performance.now();
    const model = await Qwen3Model.load(gpu, modelDir, { base: config.use_4bit ? 'nf4' : 'full', doubleQuant: config.bnb_4bit_use_double_quant, compute: plan.settings.compute });
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
      checkpointing: plan.settings.gradientCheckpointing,
      recompute: plan.settings.recompute,
      lossChunkTokens: plan.settings.lossChunkTokens,
      optimizer: resolveOptim(config.optim),
      hyper: { beta1: config.adam_beta1, beta2: config.adam_beta2, eps: config.adam_epsilon, weightDecay: config.weight_decay },
      maxGradNorm: config.max_grad_norm,
      seed: config.seed,
      plan,
    });
    const pad = tokenizer.padTokenId ?? tokenizer.eosTokenId;
    beforeTraining.dispose();
    const interrupt = new Interrupt();
    // Listening until the command returns: a second Ctrl-C while the checkpoint or the adapter is
    // being written still quits at once (writers leave only temporary names behind).
    listening = listenForInterrupt(process, interrupt, {
      onFirst: () => console.log('interrupt: finishing the current step, then writing a checkpoint (Ctrl-C again quits at once)'),
      onSecond: () => process.exit(INTERRUPT_EXIT_CODE),
    });
    const sampler = await createRunSampler(gpu, model, trainer.lora, tokenizer, config);
    const seeing = createRunObservers(config.output_dir, process.stdout, runObserverOptions(config, gpu, plan));
    // Every line goes through the progress observer: on a terminal it lands above the bar.
    const log = (line: string): void => seeing.progress.message(line);
    for (const line of seeing.notices) log(line);
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
      console.log(
        result.lastCheckpoint !== undefined
          ? `interrupted at step ${result.steps}: checkpoint ${result.lastCheckpoint}; continue with: ${resumeCommand(result.lastCheckpoint)}`
          : `interrupted at step ${result.steps}: no checkpoint was written`,
      );
      return INTERRUPT_EXIT_CODE;
    }
    const adapterDir = resolve(config.output_dir, 'adapter');
    await savePeftAdapter(adapterDir, await adapterFromGpu(gpu, trainer.lora, modelConfig), { baseModel: config.model_id, overwrite: true });
    trainer.destroy();
    await writeRendering(config.output_dir, config, tokenizer.chatTemplate);
    console.log(`adapter (PEFT layout, ${result.bestStep !== undefined && config.load_best_model_at_end ? `best: step ${result.bestStep}` : `step ${result.steps}`}) → ${adapterDir}`);
    let exported: Awaited<ReturnType<typeof exportRun>>;
    try {
      exported = await exportRun({ config, modelDir, adapterDir, outDir: config.output_dir, log });
    } catch (e) {
      // Training succeeded, the export did not: the run is marked failed (report.html, metrics.jsonl),
      // the adapter stays, and the one command that redoes only the export is printed.
      const redo = redoExportCommand(config, packageRoot());
      const message = `export failed: ${(e as Error).message}. The adapter is kept in ${adapterDir}; redo only the export with: ${redo}`;
      for (const o of seeing.observers) await o.onEnd?.({ steps: result.steps, reason: 'failed', bestStep: result.bestStep, bestEvalLoss: result.bestEvalLoss, elapsedSeconds: (performance.now() - t0) / 1000, message, lastCheckpoint: result.lastCheckpoint });
      console.error(`prompt-lora train: ${message}`);
      return 1;
    }
    console.log(`report: ${resolve(config.output_dir, 'report.html')} (plots, sample generations); metrics: ${resolve(config.output_dir, 'metrics.jsonl')}`);
    for (const line of exported.summary) console.log(line);
    if (config.model_id === EMBEDDED_MODEL_ID) for (const line of embeddedNotice()) console.log(line);
    return 0;
  } finally {
    listening?.dispose();
    gpu.destroy();
  }
}

/** Ctrl-C before any step: the run folder holds no checkpoint of this run; exit with 130. */
function exitInterrupted(when: string): never {
  console.log(`interrupted ${when}: no step was trained; run the same command again to start over`);
  process.exit(INTERRUPT_EXIT_CODE);
}
