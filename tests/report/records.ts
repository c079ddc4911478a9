import type { EvalRecord, RunStart, SampleRecord, StepRecord } from '../../src/train/events.js';

/** Hand-written training-loop records for the report tests (the loop's real values are not needed). */

export function runStart(over: Partial<RunStart> = {}): RunStart {
  return {
    totalSteps: 200, stepsPerEpoch: 50, startStep: 0, batch: 8, seqLength: 192, gradientAccumulation: 2, warmupSteps: 10,
    plannedGpuBytes: 5.7 * 1024 ** 3, outputDir: 'outputs/test-run', model: 'Qwen/Qwen3-4B-Instruct-2507', ...over,
  };
}

export function stepRecord(step: number, over: Partial<StepRecord> = {}): StepRecord {
  return {
    step, totalSteps: 200, epoch: step / 50, loss: 2 / (1 + step / 50), learningRate: 2e-4 * (1 - step / 200), gradNorm: 0.8,
    tokensPerSecond: 1234, plannedGpuBytes: 5.7 * 1024 ** 3, elapsedSeconds: step * 1.5, etaSeconds: (200 - step) * 1.5, ...over,
  };
}

export function evalRecord(step: number, evalLoss: number, over: Partial<EvalRecord> = {}): EvalRecord {
  return { step, epoch: step / 50, evalLoss, isBest: true, bestStep: step, bestEvalLoss: evalLoss, badEvaluations: 0, seconds: 3, ...over };
}

export function sample(step: number, prompt: string, output: string): SampleRecord {
  return { step, prompt, output };
}
