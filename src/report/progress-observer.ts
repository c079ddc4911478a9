import type { CheckpointRecord, EvalRecord, RunEnd, RunObserver, RunStart, SampleRecord, StepRecord } from '../train/events.js';
import { formatCheckpointLine, formatEndLine, formatEvalLine, formatStepLine } from './log-lines.js';
import { renderProgressBar, type ProgressView } from './progress-bar.js';

/** Where progress goes: process.stdout, or a fake with the same three members in tests. */
export interface ProgressStream {
  write(text: string): unknown;
  /** True on an interactive terminal: the bar is redrawn in place. */
  readonly isTTY?: boolean;
  /** Terminal width; read at every redraw so a resized window is followed. 80 when unknown. */
  readonly columns?: number;
}

/** Carriage return + "erase the whole line" (ANSI EL 2): the cursor is back at column 0 of an empty line. */
const CLEAR_LINE = '\r\x1b[2K';

/**
 * Shows the run on a stream. On a terminal: one progress bar redrawn in place at each logged step,
 * with each logged step's line, evaluations (start and result), sample generation, checkpoints and
 * other messages (`message`) printed above it on their own lines (kept in the scroll-back);
 * at the end the last bar stays on screen followed by the end line. Anywhere else (CI, a pipe, a log
 * file): one plain line per logged step, evaluation, checkpoint and message, no control characters.
 * A failed run's end line leaves out the error: the caller prints it (once) on stderr.
 */
export class ProgressObserver implements RunObserver {
  private view: ProgressView | undefined;
  private barShown = false;
  private startStep = 0;

  constructor(private readonly stream: ProgressStream) {}

  private get tty(): boolean {
    return this.stream.isTTY === true;
  }

  /** Prints a line of its own (above the bar on a terminal). The loop's `log` callback goes here. */
  message(line: string): void {
    if (this.tty && this.barShown) this.stream.write(`${CLEAR_LINE}${line}\n${this.barText()}`);
    else this.stream.write(`${line}\n`);
  }

  onStart(start: RunStart): void {
    this.view = { step: start.startStep, totalSteps: start.totalSteps };
    this.startStep = start.startStep;
    this.redraw();
  }

  onStep(record: StepRecord): void {
    this.view = { step: record.step, totalSteps: record.totalSteps, record };
    this.message(formatStepLine(record)); // on a terminal: above the bar, which is redrawn at this step
  }

  onEvalStart(step: number): void {
    this.message(`eval: evaluating at step ${step}…`);
  }

  onSamplesStart(step: number): void {
    this.message(`samples: generating at step ${step}…`);
  }

  onSamples(samples: readonly SampleRecord[]): void {
    if (samples.length > 0) this.message(`samples: ${samples.length} generated at step ${samples[0].step} (shown in report.html)`);
  }

  onEval(record: EvalRecord): void {
    this.message(formatEvalLine(record));
  }

  onCheckpoint(record: CheckpointRecord): void {
    this.message(formatCheckpointLine(record));
  }

  onEnd(end: RunEnd): void {
    if (this.tty && this.barShown) this.stream.write(`${CLEAR_LINE}${this.barText()}\n`);
    this.barShown = false;
    const line =
      end.reason === 'completed' && this.startStep > 0 && end.steps === this.startStep
        ? `nothing to do: the run had already finished at step ${end.steps} (0 steps run)`
        : formatEndLine(end.reason === 'failed' ? { ...end, message: undefined } : end);
    this.stream.write(`${line}\n`);
  }

  private barText(): string {
    return this.view ? renderProgressBar(this.view, this.stream.columns ?? 80) : '';
  }

  private redraw(): void {
    if (!this.tty || !this.view) return;
    this.stream.write(`${CLEAR_LINE}${this.barText()}`);
    this.barShown = true;
  }
}
