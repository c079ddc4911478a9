import type { TrainConfig } from '../config/schema.js';
import { iterateBatches, planBatches, stepsPerEpoch, type Batch } from '../data/batching.js';
import type { TokenizedExample } from '../data/render.js';
import type { Gpu } from '../kernels/gpu.js';
import type { Qwen3Model } from '../model/qwen3.js';
import { padBatch } from './pad-batch.js';
import { LrSchedule, type SchedulerType } from './schedule.js';
import type { Trainer } from './trainer.js';

export interface LoopResult {
  readonly steps: number;
  readonly bestEvalLoss: number | undefined;
  readonly bestStep: number | undefined;
  readonly stoppedEarly: boolean;
  readonly evals: { step: number; loss: number }[];
}

/**
 * The training loop: epochs of micro-batches (every batch padded to the program's fixed B × T),
 * gradient_accumulation_steps micro-batches per optimiser step, the LR schedule, a log line every
 * logging_steps, evaluation every eval_steps (or epoch), early stopping on eval_loss, and the best
 * parameters restored at the end when load_best_model_at_end. Reads back only at logging and
 * evaluation steps.
 */
export async function trainLoop(
  gpu: Gpu,
  model: Qwen3Model,
  trainer: Trainer,
  config: TrainConfig,
  data: { train: readonly TokenizedExample[]; eval: readonly TokenizedExample[] },
  padTokenId: number,
  log: (line: string) => void,
): Promise<LoopResult> {
  const { B, T } = trainer.program.shape;
  const plan = planBatches(data.train, { batchSize: B, maxSeqLength: T, packing: config.packing, groupByLength: config.group_by_length, seed: config.seed, padTokenId, fixedLength: true });
  const perEpoch = stepsPerEpoch(plan, config.gradient_accumulation_steps);
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
  const evalB = config.per_device_eval_batch_size;
  const evalPlan = planBatches(data.eval, { batchSize: evalB, maxSeqLength: T, packing: false, groupByLength: false, seed: config.seed, padTokenId, fixedLength: true });
  const evalProgram = data.eval.length > 0 && config.eval_strategy !== 'no' ? model.program({ B: evalB, T }, trainer.lora) : undefined;
  const evaluate = async (): Promise<number> => {
    let sum = 0;
    let count = 0;
    for (const batch of iterateBatches(data.eval, evalPlan, 0, 0)) {
      const r = await evalProgram!.run(padBatch(batch, evalB, T, padTokenId));
      if (r.targets > 0) {
        sum += r.loss * r.targets;
        count += r.targets;
      }
    }
    return sum / count;
  };

  log(`training: ${total} optimiser steps (${perEpoch} per epoch), batch ${B} × ${T}, accumulation ${config.gradient_accumulation_steps}, ${schedule.warmupSteps} warm-up steps`);
  const evals: { step: number; loss: number }[] = [];
  let best: { loss: number; step: number; params: Float32Array } | undefined;
  let bad = 0;
  let step = 0;
  let stoppedEarly = false;
  let tokens = 0;
  let lossSum = 0;
  let lossTargets = 0;
  let t0 = performance.now();
  const evalNow = async (): Promise<boolean> => {
    const loss = await evaluate();
    evals.push({ step, loss });
    const better = !best || loss < best.loss - config.early_stopping_threshold;
    log(`step ${step}: eval_loss ${loss.toFixed(4)}${better ? ' (best)' : ''}`);
    if (better) {
      best = { loss, step, params: await gpu.readF32(trainer.adapter.arena.params) };
      bad = 0;
    } else if (config.early_stopping_patience !== null && ++bad >= config.early_stopping_patience) {
      log(`early stopping: no eval_loss improvement above ${config.early_stopping_threshold} for ${bad} evaluations`);
      return true;
    }
    return false;
  };
  outer: for (let epoch = 0; step < total; epoch++) {
    let micro = 0;
    const batches: Batch[] = [...iterateBatches(data.train, plan, epoch, 0)];
    for (let i = 0; i < batches.length && step < total; i++) {
      const n = trainer.accumulate(padBatch(batches[i], B, T, padTokenId));
      tokens += B * T;
      lossTargets += n;
      micro++;
      const last = i === batches.length - 1;
      if (micro % config.gradient_accumulation_steps !== 0 && !last) continue;
      const wantLog = (step + 1) % config.logging_steps === 0;
      if (wantLog) lossSum += await trainer.readLossSum(); // the last micro-batch's loss, as a sample
      trainer.step(schedule.lrAt(step));
      step++;
      if (wantLog) {
        const norm = await trainer.readGradNorm();
        if (norm.nonFinite) throw new Error(`step ${step}: non-finite gradients (the update was skipped)`);
        const sec = (performance.now() - t0) / 1000;
        log(`step ${step}/${total} epoch ${(epoch + (i + 1) / batches.length).toFixed(2)}: loss ${(lossSum / n).toFixed(4)}, lr ${schedule.lrAt(step - 1).toExponential(2)}, grad_norm ${norm.totalNorm.toFixed(3)}, ${(tokens / sec).toFixed(0)} tokens/s`);
        lossSum = 0;
        tokens = 0;
        t0 = performance.now();
      }
      lossTargets = 0;
      if (evalProgram && config.eval_strategy === 'steps' && step % config.eval_steps === 0 && (await evalNow())) {
        stoppedEarly = true;
        break outer;
      }
    }
    if (evalProgram && config.eval_strategy === 'epoch' && (await evalNow())) {
      stoppedEarly = true;
      break;
    }
  }
  if (evalProgram && (evals.length === 0 || evals[evals.length - 1].step !== step)) await evalNow();
  if (best && config.load_best_model_at_end) {
    gpu.write(trainer.adapter.arena.params, best.params);
    log(`best checkpoint: step ${best.step}, eval_loss ${best.loss.toFixed(4)} (restored)`);
  }
  evalProgram?.destroy();
  return { steps: step, bestEvalLoss: best?.loss, bestStep: best?.step, stoppedEarly, evals };
}
