import type { CheckpointRecord, EvalRecord, RunEnd, RunStart, SampleRecord, StepRecord } from '../train/events.js';
import { lineStep, type MetricsLine } from './metrics-jsonl.js';

/**
 * Everything report.html shows, gathered from the loop's records as they come. A resumed run starts
 * from the earlier lines of metrics.jsonl (`restore`), so its plots cover the whole run, not only
 * the part after the resume.
 */
export class RunHistory {
  readonly steps: StepRecord[] = [];
  readonly evals: EvalRecord[] = [];
  readonly samples: SampleRecord[] = [];
  readonly checkpoints: CheckpointRecord[] = [];
  end: RunEnd | undefined;

  constructor(readonly start: RunStart) {}

  /** Takes the records of `lines` at or before this run's start step (what a resumed run keeps). */
  restore(lines: readonly MetricsLine[]): void {
    for (const line of lines) {
      if (lineStep(line) > this.start.startStep) continue;
      if (line.type === 'step') this.steps.push(line);
      else if (line.type === 'eval') this.evals.push(line);
      else if (line.type === 'samples') this.samples.push(...line.samples);
      else if (line.type === 'checkpoint') this.checkpoints.push(line);
    }
  }

  /**
   * Takes the step and eval records the resumed checkpoint carries (RunStart.resumedFrom): the
   * fallback when metrics.jsonl has none (it also has samples and checkpoints, the checkpoint not).
   */
  restoreFromCheckpoint(): void {
    const from = this.start.resumedFrom;
    if (!from) return;
    this.steps.push(...from.steps.filter((r) => r.step <= this.start.startStep));
    this.evals.push(...from.evals.filter((r) => r.step <= this.start.startStep));
  }

  /** The latest evaluation: its bestStep / bestEvalLoss are the loop's best so far. */
  get lastEval(): EvalRecord | undefined {
    return this.evals[this.evals.length - 1];
  }

  get lastStep(): StepRecord | undefined {
    return this.steps[this.steps.length - 1];
  }
}
