import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CheckpointRecord, EvalRecord, RunEnd, RunObserver, RunStart, SampleRecord, StepRecord } from '../train/events.js';
import { ExportError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { readMetricsJsonl } from './metrics-jsonl.js';
import { renderReportHtml } from './report-html.js';
import type { RunDescription } from './run-description.js';
import { RunHistory } from './run-history.js';

export interface ReportHtmlOptions {
  /**
   * metrics.jsonl of the same run: a resumed run takes its earlier records from there (else from
   * the records the checkpoint carries, RunStart.resumedFrom, which have no samples).
   */
  readonly metricsPath?: string;
  /** The run in words (hyperparameters, device, compute path, memory plan) for the page's "Run" table. */
  readonly description?: RunDescription;
  /** The time stamped in the page (injected for tests). */
  readonly now?: () => Date;
}

/**
 * Keeps report.html (see report-html.ts) up to date: rewritten atomically (temporary file, rename)
 * when the run starts, at each evaluation, when samples arrive and at the end. Step records are
 * collected but do not rewrite the page; a browser showing the file sees a new version at each
 * evaluation.
 */
export class ReportHtmlObserver implements RunObserver {
  private history: RunHistory | undefined;

  constructor(
    readonly path: string,
    private readonly options: ReportHtmlOptions = {},
  ) {}

  async onStart(start: RunStart): Promise<void> {
    this.history = new RunHistory(start);
    await mkdir(dirname(this.path), { recursive: true }).catch((e: Error) => {
      throw new ExportError(`report.html: cannot create the folder ${dirname(this.path)} (${e.message}); check output_dir.`, { cause: e });
    });
    if (start.startStep > 0) {
      if (this.options.metricsPath) this.history.restore(await readMetricsJsonl(this.options.metricsPath));
      if (this.history.steps.length === 0 && this.history.evals.length === 0) this.history.restoreFromCheckpoint();
    }
    await this.write();
  }

  onStep(record: StepRecord): void {
    this.started('onStep').steps.push(record);
  }

  onEval(record: EvalRecord): Promise<void> {
    this.started('onEval').evals.push(record);
    return this.write();
  }

  onSamples(samples: readonly SampleRecord[]): Promise<void> {
    this.started('onSamples').samples.push(...samples);
    return this.write();
  }

  onCheckpoint(record: CheckpointRecord): void {
    this.started('onCheckpoint').checkpoints.push(record);
  }

  onEnd(end: RunEnd): Promise<void> {
    this.started('onEnd').end = end;
    return this.write();
  }

  private started(what: string): RunHistory {
    if (!this.history) throw new ExportError(`ReportHtmlObserver.${what}: called before onStart; the training loop must send RunStart first.`);
    return this.history;
  }

  private write(): Promise<void> {
    const updated = (this.options.now?.() ?? new Date()).toISOString();
    return writeFileAtomic(this.path, renderReportHtml(this.started('write'), updated, this.options.description));
  }
}
