import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { EvalRecord, RunEnd, RunObserver, RunStart, StepRecord } from '../train/events.js';
import { ExportError } from '../errors.js';
import { fileVersionEvent, scalarEvent, textEvent } from './tensorboard-event.js';
import { frameRecord } from './tfrecord.js';

/**
 * `report_to: tensorboard`: one TensorBoard event file per run, as transformers' TensorBoardCallback
 * writes it: under `<output_dir>/runs/<Mon DD_HH-MM-SS>_<host>/` (TrainingArguments' default
 * logging_dir), named `events.out.tfevents.<unix seconds>.<host>.<pid>.0`, with the same tags:
 *
 *   args/text_summary            the resolved configuration as JSON (add_text("args", ...))
 *   train/loss, train/learning_rate, train/grad_norm, train/epoch, train/mean_token_accuracy,
 *   train/tokens_per_second      at every logged step
 *   eval/loss, eval/mean_token_accuracy, eval/runtime    at every evaluation
 *
 * The file is an append-only log (like metrics.jsonl): TensorBoard reads it while it grows, so it
 * is appended record by record, never renamed. It is created with O_EXCL, so it never replaces
 * another run's file; a resumed run starts a new folder, as transformers does.
 */
export interface TensorBoardOptions {
  /** Written once at the start as the "args" text. */
  readonly hyperparameters: Readonly<Record<string, unknown>>;
  /** Wall clock in seconds (injected for tests). */
  readonly now?: () => Date;
  readonly host?: string;
}

export class TensorBoardObserver implements RunObserver {
  private file: FileHandle | undefined;
  private path: string | undefined;
  /** The folder the event file is written to (known from the constructor: print it before the run). */
  readonly logDir: string;

  constructor(outputDir: string, private readonly options: TensorBoardOptions) {
    this.logDir = join(outputDir, 'runs', `${runFolderTime(this.clock())}_${this.host()}`);
  }

  async onStart(_start: RunStart): Promise<void> {
    const now = this.clock();
    this.path = join(this.logDir, `events.out.tfevents.${Math.floor(now.getTime() / 1000)}.${this.host()}.${process.pid}.0`);
    try {
      await mkdir(this.logDir, { recursive: true });
      this.file = await open(this.path, 'wx');
    } catch (e) {
      throw new ExportError(`report_to tensorboard: cannot create ${this.path} (${(e as Error).message}); check output_dir.`, { cause: e });
    }
    await this.write([fileVersionEvent(seconds(now)), textEvent('args', JSON.stringify(this.options.hyperparameters, null, 2), 0, seconds(now))]);
  }

  onStep(r: StepRecord): Promise<void> {
    return this.scalars(r.step, {
      'train/loss': r.loss,
      'train/learning_rate': r.learningRate,
      'train/grad_norm': r.gradNorm,
      'train/epoch': r.epoch,
      'train/mean_token_accuracy': r.tokenAccuracy,
      'train/tokens_per_second': r.tokensPerSecond,
    });
  }

  onEval(r: EvalRecord): Promise<void> {
    return this.scalars(r.step, { 'eval/loss': r.evalLoss, 'eval/mean_token_accuracy': r.evalTokenAccuracy, 'eval/runtime': r.seconds });
  }

  async onEnd(_end: RunEnd): Promise<void> {
    const file = this.file;
    this.file = undefined;
    await file?.close();
  }

  private scalars(step: number, values: Record<string, number | undefined>): Promise<void> {
    const t = seconds(this.clock());
    return this.write(Object.entries(values).filter((e): e is [string, number] => e[1] !== undefined).map(([tag, v]) => scalarEvent(tag, v, step, t)));
  }

  private async write(events: readonly Uint8Array[]): Promise<void> {
    if (!this.file) throw new ExportError('TensorBoardObserver: a record before onStart (or after onEnd); the training loop must send RunStart first.');
    const bytes = Buffer.concat(events.map(frameRecord));
    await this.file.write(bytes);
  }

  private clock(): Date {
    return this.options.now?.() ?? new Date();
  }

  private host(): string {
    return this.options.host ?? hostname();
  }
}

function seconds(d: Date): number {
  return d.getTime() / 1000;
}

/** "%b%d_%H-%M-%S" in local time, as TrainingArguments names its default logging_dir. */
function runFolderTime(d: Date): string {
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${months[d.getMonth()]}${p(d.getDate())}_${p(d.getHours())}-${p(d.getMinutes())}-${p(d.getSeconds())}`;
}
