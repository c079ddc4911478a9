/**
 * What the training loop tells the outside world while it runs: one record per logged optimiser
 * step, per evaluation, per checkpoint, and one at the start and at the end. The loop knows nothing
 * of terminals, files or HTML; observers (progress bar, log lines, metrics.jsonl, report.html,
 * checkpoint writer) turn these records into output. Every number is plain data (JSON-safe).
 */

/** Written once when training starts. */
export interface RunStart {
  readonly totalSteps: number;
  readonly stepsPerEpoch: number;
  /** First step this run will take (0 on a fresh run, the checkpoint's step on --resume). */
  readonly startStep: number;
  /** Micro-batch shape (B sequences × T tokens) and gradient accumulation. */
  readonly batch: number;
  readonly seqLength: number;
  readonly gradientAccumulation: number;
  readonly warmupSteps: number;
  /** Planned GPU memory of the training step (bytes): Dawn reports no live usage. */
  readonly plannedGpuBytes: number;
  readonly outputDir: string;
  /** The base model as the user named it (folder or hub id), for reports. */
  readonly model?: string;
  /** On --resume: the checkpoint resumed from and the records of the steps before it. */
  readonly resumedFrom?: { readonly dir: string; readonly steps: readonly StepRecord[]; readonly evals: readonly EvalRecord[] };
}

/** One logged optimiser step (every logging_steps). */
export interface StepRecord {
  readonly step: number;
  readonly totalSteps: number;
  /** Fractional epoch at the end of this step (1.5 = half-way through the second epoch). */
  readonly epoch: number;
  /** Mean training loss per target token over the steps since the last record. */
  readonly loss: number;
  readonly learningRate: number;
  readonly gradNorm: number;
  /** Fraction of target tokens whose argmax prediction was right, when the step measures it. */
  readonly tokenAccuracy?: number;
  /** Tokens (B × T per micro-batch, padding included) per second since the last record. */
  readonly tokensPerSecond: number;
  readonly plannedGpuBytes: number;
  /** Seconds since this run's start, and the estimate to the last step. */
  readonly elapsedSeconds: number;
  readonly etaSeconds: number;
}

/** One evaluation on the eval split. */
export interface EvalRecord {
  readonly step: number;
  readonly epoch: number;
  readonly evalLoss: number;
  readonly evalTokenAccuracy?: number;
  /** This evaluation's eval_loss is the lowest so far (the threshold plays no part: it only feeds badEvaluations). */
  readonly isBest: boolean;
  readonly bestStep: number;
  readonly bestEvalLoss: number;
  /** Evaluations in a row without improvement (early stopping counts these against its patience). */
  readonly badEvaluations: number;
  readonly seconds: number;
}

/** A checkpoint written to disk (complete: after its rename). */
export interface CheckpointRecord {
  readonly step: number;
  readonly dir: string;
  /** 'best': save_strategy best, after an evaluation that improved. */
  readonly reason: 'save_steps' | 'epoch' | 'interrupt' | 'final' | 'best';
}

/** Written once when the loop ends, however it ends. */
export interface RunEnd {
  readonly steps: number;
  readonly reason: 'completed' | 'early_stopping' | 'interrupted' | 'failed';
  readonly bestStep?: number;
  readonly bestEvalLoss?: number;
  readonly elapsedSeconds: number;
  readonly message?: string;
  /** The newest checkpoint written or resumed from, if any. */
  readonly lastCheckpoint?: string;
}

/** A sample generation for the report: a fixed prompt and what the model wrote at `step`. */
export interface SampleRecord {
  readonly step: number;
  readonly prompt: string;
  readonly output: string;
}

/**
 * Receives the loop's records. Every method is optional; a method may return a promise, which the
 * loop awaits (an observer that writes a file finishes before the next step). An observer that
 * throws stops the run: its error is the run's error.
 */
export interface RunObserver {
  onStart?(start: RunStart): void | Promise<void>;
  onStep?(record: StepRecord): void | Promise<void>;
  /** An evaluation on the eval split begins at `step` (its result comes as onEval). */
  onEvalStart?(step: number): void | Promise<void>;
  onEval?(record: EvalRecord): void | Promise<void>;
  /** Sample generation begins at `step` (the samples come as onSamples). */
  onSamplesStart?(step: number): void | Promise<void>;
  onSamples?(samples: readonly SampleRecord[]): void | Promise<void>;
  onCheckpoint?(record: CheckpointRecord): void | Promise<void>;
  onEnd?(end: RunEnd): void | Promise<void>;
}
