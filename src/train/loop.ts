import { resumeCommand } from '../config/command-line.js';
import type { TrainConfig } from '../config/schema.js';
import { iterateBatches, planBatches, stepsPerEpoch } from '../data/batching.js';
import type { TokenizedExample } from '../data/render.js';
import { CheckpointError, DataError, DeviceError, NonFiniteError } from '../errors.js';
import type { FileSystem } from '../io/atomic-file.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Qwen3Model } from '../model/qwen3.js';
import { resolveOptim } from './adamw8bit.js';
import { listCheckpoints, readCheckpointTensors, type OpenedCheckpoint } from './checkpoint-reader.js';
import type { DataPosition } from './checkpoint-state.js';
import { writeTrainingCheckpoint } from './checkpoint-writer.js';
import type { CheckpointRecord, EvalRecord, RunEnd, RunObserver, SampleRecord, StepRecord } from './events.js';
import type { InterruptSignal } from './interrupt.js';
import { padBatch } from './pad-batch.js';
import { LrSchedule, type SchedulerType } from './schedule.js';
import type { Trainer } from './trainer.js';
import { judgeEvaluation } from './best-metric.js';
import { GpuQueueBound } from './gpu-queue.js';

export interface LoopResult {
  readonly steps: number;
  readonly reason: Exclude<RunEnd['reason'], 'failed'>;
  readonly bestEvalLoss: number | undefined;
  readonly bestStep: number | undefined;
  readonly stoppedEarly: boolean;
  readonly evals: readonly EvalRecord[];
  /** The newest checkpoint written (or resumed from). */
  readonly lastCheckpoint: string | undefined;
}

export interface LoopOptions {
  /** Free-form lines (start-up facts, resume, early stopping); records go to the observers. */
  readonly log: (line: string) => void;
  readonly observers?: readonly RunObserver[];
  /** Called after each evaluation; its records go to the observers' onSamples. */
  readonly samples?: (step: number) => Promise<SampleRecord[]>;
  /** Polled after every optimiser step: when requested, the loop checkpoints and returns 'interrupted'. */
  readonly interrupt?: InterruptSignal;
  /** Continue from this checkpoint (openCheckpoint; the caller has checked its config). */
  readonly resume?: OpenedCheckpoint;
  /** Planned GPU bytes of the step (the memory plan's total), for the records. */
  readonly plannedGpuBytes?: number;
  /** base_model_name_or_path written into checkpoints' adapter_config.json (default: model_id). */
  readonly baseModel?: string;
  /** File system for the checkpoints' own files (tests inject faults). */
  readonly checkpointFs?: FileSystem;
}

/**
 * The training loop: epochs of micro-batches (every batch padded to the program's fixed B × T),
 * gradient_accumulation_steps micro-batches per optimiser step, the LR schedule, a StepRecord every
 * logging_steps, evaluation every eval_steps (or epoch) with early stopping on eval_loss,
 * checkpoints (save_strategy), resume, Ctrl-C, and the best parameters restored at the end when
 * load_best_model_at_end.
 *
 * Readbacks only at logging, evaluation and save steps: the loss is summed over every micro-batch
 * on the GPU, and the grad-norm state's sticky skipped-step counter tells whether any update since
 * the last check had a non-finite gradient (the GPU skips such an update); either stops the run
 * with a NonFiniteError naming the step range and the last good checkpoint.
 */
export async function trainLoop(
  gpu: Gpu,
  model: Qwen3Model,
  trainer: Trainer,
  config: TrainConfig,
  data: { train: readonly TokenizedExample[]; eval: readonly TokenizedExample[] },
  padTokenId: number,
  options: LoopOptions,
): Promise<LoopResult> {
  const { log } = options;
  const observers = options.observers ?? [];
  const notify = async (f: (o: RunObserver) => void | Promise<void> | undefined): Promise<void> => {
    for (const o of observers) await f(o);
  };
  const { B, T } = trainer.program.shape;
  const accumulation = config.gradient_accumulation_steps;
  const plan = planBatches(data.train, { batchSize: B, maxSeqLength: T, packing: config.packing, groupByLength: config.group_by_length, seed: config.seed, padTokenId, fixedLength: true });
  const perEpochMicro = plan.batchesPerEpoch;
  const perEpoch = stepsPerEpoch(plan, accumulation);
  const total = config.max_steps > 0 ? config.max_steps : Math.ceil(perEpoch * config.num_train_epochs);
  const kw = config.lr_scheduler_kwargs ?? {};
  const schedule = new LrSchedule({
    type: config.lr_scheduler_type as SchedulerType,
    learningRate: config.learning_rate,
    totalSteps: total,
    warmupSteps: config.warmup_steps,
    warmupRatio: config.warmup_ratio,
    numCycles: kw.num_cycles,
    minLr: kw.min_lr,
    minLrRate: kw.min_lr_rate,
  });
  const plannedGpuBytes = options.plannedGpuBytes ?? trainer.program.bytes;
  const evalB = config.per_device_eval_batch_size;
  const evalPlan = planBatches(data.eval, { batchSize: evalB, maxSeqLength: T, packing: false, groupByLength: false, seed: config.seed, padTokenId, fixedLength: true });
  const checkpointTarget = {
    outputDir: config.output_dir,
    model: model.config,
    lora: trainer.lora.config,
    loraScale: trainer.lora.scale,
    baseModel: options.baseModel ?? config.model_id,
    fs: options.checkpointFs,
  };
  const optimizerKind = resolveOptim(config.optim).kind;
  const keepBest = config.load_best_model_at_end;

  // ── Run state (all of it goes into a checkpoint) ────────────────────────────────────────
  let step = 0;
  let position: DataPosition = { epoch: 0, nextMicroBatch: 0, microBatchesPerEpoch: perEpochMicro };
  /** Best evaluation; `params` (the arena, (n) f32) only with load_best_model_at_end. */
  let best: { evalLoss: number; step: number; params?: Float32Array } | undefined;
  let bad = 0;
  const evals: EvalRecord[] = [];
  const logs: StepRecord[] = [];
  /** The sticky skipped-step count at the last check, and the step of that check. */
  let skippedKnown = 0;
  let checkedStep = 0;
  let lastCheckpoint: string | undefined;
  let elapsedBefore = 0;
  /** Steps and evaluations so far, and that count when the last checkpoint was written. */
  let changes = 0;
  let savedChanges = -1;

  if (options.resume) {
    const r = options.resume;
    const st = r.state.loop;
    if (st.data.microBatchesPerEpoch !== perEpochMicro) {
      throw new CheckpointError(
        `${r.dir}: its epoch has ${st.data.microBatchesPerEpoch} micro-batches, this run's ${perEpochMicro}; the dataset's contents changed, so the saved data position cannot be restored. Start a new run without --resume.`,
      );
    }
    const tensors = await readCheckpointTensors(r, model.config);
    trainer.importState(r.dir, tensors.trainer);
    step = st.globalStep;
    position = st.data;
    bad = st.badEvaluations;
    evals.push(...st.evalHistory);
    logs.push(...st.logHistory);
    skippedKnown = tensors.trainer.gradNorm[3];
    checkedStep = step;
    lastCheckpoint = r.dir;
    elapsedBefore = st.elapsedSeconds;
    savedChanges = changes;
    if (st.best) {
      const n = trainer.adapter.arena.count;
      if (tensors.bestParams && tensors.bestParams.length !== n) throw new CheckpointError(`${r.dir}: best_params has ${tensors.bestParams.length} values, the adapter ${n}`);
      best = { ...st.best, params: keepBest ? (tensors.bestParams ?? (await gpu.readF32(trainer.adapter.arena.params))) : undefined };
    }
    if (st.totalSteps !== total) log(`resume: the run now has ${total} steps (the checkpoint's run had ${st.totalSteps}); the LR schedule follows the new total`);
    log(`resumed from ${r.dir}: step ${step}/${total}, epoch ${position.epoch} at micro-batch ${position.nextMicroBatch} of ${perEpochMicro}`);
  }
  if (!options.resume && config.save_strategy !== 'no') {
    const earlier = await listCheckpoints(config.output_dir);
    if (earlier.length > 0) {
      log(
        `note: ${config.output_dir} already holds ${earlier.length} checkpoint(s) of an earlier run (newest ${earlier[earlier.length - 1].dir}); ` +
          'this run adds its own and save_total_limit counts them all. To continue that run instead, pass --resume.',
      );
    }
  }
  const evalProgram = data.eval.length > 0 && config.eval_strategy !== 'no' ? model.program({ B: evalB, T }, trainer.lora) : undefined;
  const evaluate = async (): Promise<{ loss: number; accuracy: number }> => {
    let sum = 0;
    let count = 0;
    let correct = 0;
    for (const batch of iterateBatches(data.eval, evalPlan, 0, 0)) {
      const r = await evalProgram!.run(padBatch(batch, evalB, T, padTokenId));
      if (r.targets > 0) {
        sum += r.loss * r.targets;
        count += r.targets;
        correct += r.correct;
      }
    }
    if (count === 0) throw new DataError(`evaluation: the ${data.eval.length} eval examples hold no target token (every label is masked); check completion_only_loss and the eval split`);
    return { loss: sum / count, accuracy: correct / count };
  };
  const startStep = step;
  const runStart = performance.now();
  const elapsed = (): number => elapsedBefore + (performance.now() - runStart) / 1000;
  const epochAt = (p: DataPosition): number => p.epoch + p.nextMicroBatch / perEpochMicro;
  const resumeAdvice = (): string =>
    lastCheckpoint ? `The last good checkpoint is ${lastCheckpoint}: continue from it with \`${resumeCommand(lastCheckpoint)}\`.` : 'No checkpoint was written yet (save_strategy / save_steps).';

  // Tokens/s window: tokens since the last record and the time spent in evaluations and saves.
  let windowTokens = 0;
  let windowStart = performance.now();
  let windowPaused = 0;
  const paused = async <R>(f: () => Promise<R>): Promise<R> => {
    const t0 = performance.now();
    try {
      return await f();
    } finally {
      windowPaused += performance.now() - t0;
    }
  };

  /** Throws when an update since the last check was skipped (non-finite) or `lossSum` is not finite. */
  const ensureFinite = (skippedSteps: number, lossSum: number | undefined): void => {
    const skipped = skippedSteps - skippedKnown;
    if (skipped > 0 || (lossSum !== undefined && !Number.isFinite(lossSum))) {
      const range = checkedStep + 1 >= step ? `at step ${step}` : `between steps ${checkedStep + 1} and ${step}`;
      const what = skipped > 0 ? `${skipped} optimiser update(s) had non-finite gradients and were skipped` : `the summed training loss is ${lossSum}`;
      throw new NonFiniteError(
        `non-finite loss or gradients ${range}: ${what}; training has diverged. ${resumeAdvice()} ` +
          `Lower learning_rate (now ${config.learning_rate}) or max_grad_norm (now ${config.max_grad_norm}) before continuing.`,
      );
    }
    checkedStep = step;
  };

  const logStep = async (): Promise<void> => {
    const loss = await trainer.readLoss(true);
    const norm = await trainer.readGradNorm();
    ensureFinite(norm.skippedSteps, loss.sum);
    const now = performance.now();
    const seconds = Math.max(1e-9, (now - windowStart - windowPaused) / 1000);
    const thisRun = (now - runStart) / 1000;
    const record: StepRecord = {
      step,
      totalSteps: total,
      epoch: epochAt(position),
      loss: loss.sum / loss.targets,
      tokenAccuracy: loss.correct / loss.targets,
      learningRate: schedule.lrAt(step - 1),
      gradNorm: norm.totalNorm,
      tokensPerSecond: windowTokens / seconds,
      plannedGpuBytes,
      elapsedSeconds: elapsed(),
      etaSeconds: step > startStep ? (thisRun / (step - startStep)) * (total - step) : 0,
    };
    logs.push(record);
    windowTokens = 0;
    windowStart = now;
    windowPaused = 0;
    await notify((o) => o.onStep?.(record));
  };

  const save = async (reason: CheckpointRecord['reason']): Promise<void> => {
    if (savedChanges === changes) return; // nothing happened since the last checkpoint
    const state = await trainer.exportState();
    ensureFinite(state.gradNorm[3], state.pendingLoss.sum);
    const loop = {
      globalStep: step,
      totalSteps: total,
      epoch: epochAt(position),
      data: position,
      schedulerStep: step,
      best: best ? { step: best.step, evalLoss: best.evalLoss } : null,
      badEvaluations: bad,
      evalHistory: evals,
      logHistory: logs,
      elapsedSeconds: elapsed(),
    };
    const bestParams = keepBest && best && best.step !== step ? best.params : undefined;
    const dir = await writeTrainingCheckpoint(checkpointTarget, { reason, loop, trainer: state, optimizer: optimizerKind, bestParams, config });
    lastCheckpoint = dir;
    savedChanges = changes;
    await notify((o) => o.onCheckpoint?.({ step, dir, reason }));
  };

  /** One evaluation; returns true when early stopping ends the run. */
  const evalNow = async (): Promise<boolean> => {
    const norm = await trainer.readGradNorm();
    ensureFinite(norm.skippedSteps, undefined);
    await notify((o) => o.onEvalStart?.(step));
    const t0 = performance.now();
    const { loss: evalLoss, accuracy: evalTokenAccuracy } = await evaluate();
    if (!Number.isFinite(evalLoss)) throw new NonFiniteError(`step ${step}: eval_loss is ${evalLoss}; the adapter has diverged. ${resumeAdvice()}`);
    const judged = judgeEvaluation(best?.evalLoss, evalLoss, config.early_stopping_threshold, bad);
    const { isBest } = judged;
    const improved = judged.badEvaluations === 0;
    bad = judged.badEvaluations;
    if (isBest) best = { evalLoss, step, params: keepBest ? await gpu.readF32(trainer.adapter.arena.params) : undefined };
    changes++;
    const record: EvalRecord = { step, epoch: epochAt(position), evalLoss, evalTokenAccuracy, isBest, bestStep: best!.step, bestEvalLoss: best!.evalLoss, badEvaluations: bad, seconds: (performance.now() - t0) / 1000 };
    evals.push(record);
    await notify((o) => o.onEval?.(record));
    if (options.samples) {
      await notify((o) => o.onSamplesStart?.(step));
      const samples = await options.samples(step);
      await notify((o) => o.onSamples?.(samples));
    }
    if (isBest && config.save_strategy === 'best') await save('best');
    const stop = !improved && config.early_stopping_patience !== null && bad >= config.early_stopping_patience;
    if (stop) log(`early stopping: no eval_loss improvement above ${config.early_stopping_threshold} for ${bad} evaluations`);
    return stop;
  };

  let reason: LoopResult['reason'] = 'completed';
  try {
    await notify((o) =>
      o.onStart?.({
        totalSteps: total,
        stepsPerEpoch: perEpoch,
        startStep,
        batch: B,
        seqLength: T,
        gradientAccumulation: accumulation,
        warmupSteps: schedule.warmupSteps,
        plannedGpuBytes,
        outputDir: config.output_dir,
        model: config.model_id,
        resumedFrom: options.resume ? { dir: options.resume.dir, steps: [...logs], evals: [...evals] } : undefined,
      }),
    );
    log(`training: ${total} optimiser steps (${perEpoch} per epoch), batch ${B} × ${T}, accumulation ${accumulation}, ${schedule.warmupSteps} warm-up steps`);
    const evalOn = evalProgram !== undefined;
    const queueBound = new GpuQueueBound(gpu.device.queue);
    outer: while (step < total) {
      const { epoch } = position;
      let i = position.nextMicroBatch;
      for (const batch of iterateBatches(data.train, plan, epoch, i)) {
        if (step >= total) break;
        trainer.accumulate(padBatch(batch, B, T, padTokenId));
        await queueBound.afterSubmit(); // at most two micro-batches in flight
        windowTokens += B * T;
        i++;
        position = { epoch, nextMicroBatch: i, microBatchesPerEpoch: perEpochMicro };
        if (i % accumulation !== 0 && i !== perEpochMicro) continue;
        trainer.step(schedule.lrAt(step));
        step++;
        changes++;
        gpu.check(); // a lost device fails here, between steps, without a readback
        if (step % config.logging_steps === 0) await logStep();
        if (evalOn && config.eval_strategy === 'steps' && step % config.eval_steps === 0 && (await paused(evalNow))) {
          reason = 'early_stopping';
          break outer;
        }
        if (config.save_strategy === 'steps' && step % config.save_steps === 0) await paused(() => save('save_steps'));
        if (options.interrupt?.requested) {
          await save('interrupt');
          reason = 'interrupted';
          break outer;
        }
        // Let signal handlers (Ctrl-C) run: the step itself only submits GPU work.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // The epoch's end (also when max_steps cut it short, as before).
      if (evalOn && config.eval_strategy === 'epoch' && (await paused(evalNow))) {
        reason = 'early_stopping';
        break;
      }
      if (i === perEpochMicro) {
        position = { epoch: epoch + 1, nextMicroBatch: 0, microBatchesPerEpoch: perEpochMicro };
        if (config.save_strategy === 'epoch') await paused(() => save('epoch'));
      }
      if (options.interrupt?.requested) {
        await save('interrupt');
        reason = 'interrupted';
        break;
      }
    }
    if (reason !== 'interrupted') {
      if (evalOn && (evals.length === 0 || evals[evals.length - 1].step !== step)) await evalNow();
      if (config.save_strategy !== 'no') await save('final');
      if (best?.params) {
        gpu.write(trainer.adapter.arena.params, best.params);
        log(`best checkpoint: step ${best.step}, eval_loss ${best.evalLoss.toFixed(4)} (restored)`);
      }
    }
  } catch (e) {
    // A lost device is reported with where the run can continue from.
    const error = e instanceof DeviceError ? new DeviceError(`${e.message} ${resumeAdvice()}`, { cause: e }) : e;
    const message = error instanceof Error ? error.message : String(error);
    await notify((o) => o.onEnd?.({ steps: step, reason: 'failed', bestStep: best?.step, bestEvalLoss: best?.evalLoss, elapsedSeconds: elapsed(), message, lastCheckpoint })).catch(() => undefined);
    throw error;
  } finally {
    evalProgram?.destroy();
  }
  await notify((o) => o.onEnd?.({ steps: step, reason, bestStep: best?.step, bestEvalLoss: best?.evalLoss, elapsedSeconds: elapsed(), lastCheckpoint }));
  return { steps: step, reason, bestEvalLoss: best?.evalLoss, bestStep: best?.step, stoppedEarly: reason === 'early_stopping', evals, lastCheckpoint };
}
