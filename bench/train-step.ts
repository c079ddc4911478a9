/**
 * Full QLoRA training-step benchmark at a real model's shapes with random weights (no download):
 *   node dist/bench/train-step.js [--config configs/models/qwen3-4b.json] [--batch 4] [--seq 512]
 *        [--r 32] [--checkpointing on|off|auto|both|LIST] [--max-memory SIZE] [--optim adamw|adamw_8bit]
 *        [--steps 4] [--json FILE]
 *        [--accumulation 1] [--queue-bound off|on|both] [--dropout 0] [--compute float32|float16|both|auto]
 *        [--robustness] [--saved-f16 auto|on|off|both] [--double-quant]
 * One step = forward + backward of a micro-batch + grad-norm + optimiser update, timed over
 * --steps steps after one warm-up (wall clock around onSubmittedWorkDone). Reports tokens/s and the
 * planned GPU memory of the step (WebGPU cannot report allocations: the plan lists every buffer,
 * and the step's own buffers are counted as allocated).
 * --accumulation runs that many micro-batches per optimiser step; --queue-bound on waits after each
 * micro-batch's submit for the one before it, as the training loop does (src/train/gpu-queue.ts),
 * so the cost of that bound on the step time is measured side by side with the unbounded queue.
 * --dropout sets lora_dropout (its masks add dispatches: the dispatch count of each setting is printed).
 * --compute picks the projections' path (src/model/compute-path.ts): float32 (the tiled f32
 * matmuls), float16 (tensor cores: f16 subgroup matrices, f32 accumulation; an error where the
 * adapter has none), both (side by side over the same weights) or auto (default: as a run would).
 * --checkpointing takes a comma list of on (every layer recomputed), off (none) and auto (both =
 * on,off, the default): auto picks the recomputed layers by the trainer's own rule (autoRecompute,
 * src/train/auto-recompute.ts) against --max-memory (a size as the config's max_memory: 24GiB,
 * 24000MiB, or GiB as a number), else the device's memory as the trainer guesses it
 * (recomputeBudget, src/train/step-settings.ts); its row prints the policy and the rule's reason,
 * and the JSON records both (`recompute`, as run.json does). --robustness turns Dawn's robustness
 * transform on (off by default, as in a run: src/kernels/gpu.ts gpuToggles) to measure its cost.
 * --saved-f16 keeps the saved layers' F16_SAVED activations in f16 (on), f32 (off), both side by side,
 * or as a run does (auto, the default: savesF16, on the tensor-core path). --double-quant stores the
 * NF4 block scales double-quantised (bnb_4bit_use_double_quant: true, as the v7 config trains).
 * A tiny shape runs on a CPU adapter:
 * --config ../shared/fixtures/qwen3-tiny/model/config.json --batch 1 --seq 16.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError } from '../src/errors.js';
import { Gpu } from '../src/kernels/gpu.js';
import { PROJECTIONS } from '../src/model/checkpoint.js';
import { parseQwen3Config } from '../src/model/config.js';
import { createLoraAdapter } from '../src/model/lora-init.js';
import { Qwen3Model } from '../src/model/qwen3.js';
import { RandomQwen3Source } from '../src/model/random-source.js';
import { createTrainKernels, type TrainKernels } from '../src/train/kernels.js';
import { chooseComputePath, type ComputePath } from '../src/model/compute-path.js';
import { baseStoredFormats } from '../src/model/tensor-core-kernels.js';
import { fmtBytes, planStep } from '../src/train/plan.js';
import { GpuQueueBound } from '../src/train/gpu-queue.js';
import { Trainer } from '../src/train/trainer.js';
import type { StepSettings } from '../src/train/plan.js';
import { autoRecompute } from '../src/train/auto-recompute.js';
import { savesF16 } from '../src/train/step-plan.js';
import { describeRecompute, type RecomputePolicy } from '../src/train/recompute.js';
import { recordRecompute } from '../src/train/recompute-record.js';
import { deviceLossHead, recomputeBudget } from '../src/train/step-settings.js';
import { chooseLossChunk } from '../src/model/loss-head.js';
import { maxMemoryArg, parseCheckpointingModes, type CheckpointingMode } from './train-step-args.js';

const { values } = parseArgs({
  options: {
    robustness: { type: 'boolean', default: false },
    config: { type: 'string', default: 'configs/models/qwen3-4b.json' },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '512' },
    r: { type: 'string', default: '32' },
    checkpointing: { type: 'string', default: 'both' },
    'max-memory': { type: 'string' },
    optim: { type: 'string', default: 'adamw' },
    steps: { type: 'string', default: '4' },
    json: { type: 'string' },
    accumulation: { type: 'string', default: '1' },
    'queue-bound': { type: 'string', default: 'off' },
    dropout: { type: 'string', default: '0' },
    compute: { type: 'string', default: 'auto' },
    'saved-f16': { type: 'string', default: 'auto' },
    'double-quant': { type: 'boolean', default: false },
  },
});
const config = parseQwen3Config(JSON.parse(readFileSync(values.config!, 'utf8')), values.config!);
const B = Number(values.batch);
const T = Number(values.seq);
const r = Number(values.r);
const steps = Number(values.steps);
const optim = values.optim === 'adamw_8bit' ? 'adamw_8bit' : 'adamw';
const modes = parseCheckpointingModes(values.checkpointing!);
const maxMemory = maxMemoryArg(values['max-memory']);
if (maxMemory !== null && !modes.includes('auto')) throw new ConfigError(`--max-memory ${values['max-memory']}: only --checkpointing auto uses it; add auto to --checkpointing (e.g. on,off,auto)`);
const accumulation = Number(values.accumulation);
const bounds = values['queue-bound'] === 'both' ? [false, true] : [values['queue-bound'] === 'on'];
const dropout = Number(values.dropout);
const savedF16Arg = values['saved-f16']!;
const SAVED_F16: Record<string, (boolean | undefined)[]> = { auto: [undefined], on: [true], off: [false], both: [true, false] };
if (!(savedF16Arg in SAVED_F16)) throw new ConfigError(`--saved-f16 ${savedF16Arg}: expected auto, on, off or both`);
const savedF16s = SAVED_F16[savedF16Arg]!;

const gpu = await Gpu.open({ robustness: values.robustness });
console.log(`device: ${gpu.describe()}; Dawn robustness ${gpu.robustness ? "on" : "off"}`);
const computeArg = values.compute!;
if (!['float32', 'float16', 'both', 'auto'].includes(computeArg)) throw new Error(`--compute ${computeArg}: expected float32, float16, both or auto`);
const paths: ComputePath[] =
  computeArg === 'both' ? ['f32', 'tensor-cores'] : [chooseComputePath(gpu, computeArg as 'auto' | 'float32' | 'float16', config).path];
const doubleQuant = values['double-quant']!;
const model = await Qwen3Model.load(gpu, new RandomQwen3Source(config, 1), { base: 'nf4', doubleQuant });
const kernelsOf = new Map<ComputePath, TrainKernels>();
for (const p of paths) kernelsOf.set(p, await createTrainKernels(gpu, config, model.kernels, { compute: p, formats: baseStoredFormats('nf4', doubleQuant) }));
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % config.vocabSize);
const batch = { B, T, inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T), segmentIds: new Int32Array(B * T), examples: [], targets: 0 };
const L = config.numHiddenLayers;
const budget = recomputeBudget(maxMemory, gpu, '--max-memory');
/** The step's memory-plan settings on this device (as runStepSettings makes them), recompute apart. */
const settingsOf = (compute: ComputePath): StepSettings => ({
  batch: B,
  seq: T,
  r,
  targets: PROJECTIONS,
  gradientCheckpointing: true,
  optimizer: optim,
  base: 'nf4',
  doubleQuant,
  lossChunkTokens: chooseLossChunk(gpu, B * T, config.vocabSize),
  lossHead: deviceLossHead(gpu, config),
  loraDropout: dropout,
  compute,
  maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
});
/** A setting's policy, with the auto rule's reason (undefined for on and off). */
const resolve = (mode: CheckpointingMode, settings: StepSettings): { policy: RecomputePolicy; why?: string } =>
  mode === 'on' ? { policy: 'full' } : mode === 'off' ? { policy: 'none' } : autoRecompute(config, settings, budget.bytes, budget.from);
const results = [];
for (const [compute, kernels] of kernelsOf) for (const savedF16 of savedF16s) for (const mode of modes) {
  const base = { ...settingsOf(compute), savedF16 };
  const { policy, why } = resolve(mode, base);
  const checkpointing = policy !== 'none';
  const settings: StepSettings = { ...base, gradientCheckpointing: checkpointing, recompute: policy, recomputeWhy: why };
  for (const bounded of bounds) {
    const adapter = createLoraAdapter(gpu, config, { r, alpha: 2 * r, dropout, targetModules: PROJECTIONS, useRslora: false }, 1);
    const trainer = await Trainer.create(gpu, model, adapter, { B, T, checkpointing, recompute: policy, savedF16, optimizer: { kind: optim }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1 }, kernels);
    trainer.accumulate(batch);
    trainer.step(1e-4);
    await gpu.sync();
    const queue = bounded ? new GpuQueueBound(gpu.device.queue) : undefined;
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      for (let a = 0; a < accumulation; a++) {
        trainer.accumulate(batch);
        if (queue) await queue.afterSubmit();
      }
      trainer.step(1e-4);
    }
    await gpu.sync();
    const sec = (performance.now() - t0) / 1000 / steps;
    const loss = (await trainer.readLossSum()) / (B * T - B);
    const plan = planStep(config, { ...settings, lossChunkTokens: trainer.program.shape.lossChunkTokens });
    const rec = {
      device: gpu.describe(),
      robustness: gpu.robustness,
      date: new Date().toISOString(),
      B,
      T,
      r,
      compute,
      checkpointing,
      checkpointingSetting: mode,
      savedF16: savesF16(settings),
      recompute: recordRecompute(mode === 'auto' ? 'auto' : mode === 'on', settings, L, gpu.describe()),
      recomputeBudgetGiB: mode === 'auto' && budget.bytes !== undefined ? budget.bytes / 2 ** 30 : null,
      recomputeBudgetFrom: mode === 'auto' ? budget.from : null,
      optim,
      doubleQuant,
      accumulation,
      queueBound: bounded,
      dropout,
      stepS: sec,
      tokensPerS: (B * T * accumulation) / sec,
      dispatches: trainer.program.dispatchCount,
      plannedGiB: plan.total / 2 ** 30,
      allocatedGiB: (model.weights.bytes + trainer.program.bytes) / 2 ** 30,
      loss,
    };
    console.log(
      `step B=${B} T=${T} r=${r} all 7${dropout > 0 ? `, dropout ${dropout}` : ''}, compute ${compute === 'f32' ? 'f32         ' : 'tensor-cores'}, checkpointing ${mode === 'auto' ? `auto (${describeRecompute(policy, L)})` : mode.padEnd(3)} ${optim}${doubleQuant ? ', double-quant' : ''}, saved ${savesF16(settings) ? 'f16' : 'f32'}, accumulation ${accumulation}, queue bound ${bounded ? 'on ' : 'off'}: ` +
        `${(sec * 1000).toFixed(0)} ms/step, ${((B * T * accumulation) / sec).toFixed(0)} tokens/s, ` +
        `${rec.dispatches} dispatches, planned ${fmtBytes(plan.total)}, loss ${loss.toFixed(3)}` +
        (why === undefined ? '' : ` — ${why}`),
    );
    results.push(rec);
    trainer.destroy();
  }
}
if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2));
gpu.destroy();
