import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ExportError } from '../errors.js';
import type { CheckpointRecord, EvalRecord, RunEnd, RunObserver, RunStart, SampleRecord, StepRecord } from '../train/events.js';
import { writeFileAtomic } from '../io/atomic-file.js';

/**
 * metrics.jsonl: one JSON object per line, in the order the loop emitted them, each with a `type`:
 *
 *   {"type":"start","totalSteps":200,"startStep":0,...}                    RunStart
 *   {"type":"step","step":20,"loss":1.2345,"learningRate":0.000198,...}    StepRecord (train loss, lr, grad norm, tokens/s, token accuracy, planned GPU bytes)
 *   {"type":"eval","step":40,"evalLoss":1.2,"isBest":true,...}             EvalRecord
 *   {"type":"samples","step":40,"samples":[{"step":40,"prompt":...,"output":...}]}
 *   {"type":"checkpoint","step":50,"dir":"...","reason":"save_steps"}      CheckpointRecord
 *   {"type":"end","steps":200,"reason":"completed",...}                    RunEnd
 *
 * Non-finite numbers (a NaN loss) are written as null (JSON has no NaN) and read back as NaN.
 * Each line is appended as it comes (one write per record, nothing buffered in the process), so a
 * crash keeps every line written before it. A resumed run (RunStart.startStep > 0) first rewrites
 * the file keeping the lines at or before that step (a torn last line is dropped too) and then
 * appends; a fresh run starts a new file. The folder is created when missing. When a resumed run
 * finds no earlier lines (metrics.jsonl missing), it writes the step and eval records the checkpoint
 * carries (RunStart.resumedFrom) instead.
 */

/** RunStart as a line: `resumedFrom` is cut down to the checkpoint folder (its records are lines of their own). */
export type StartLine = { readonly type: 'start' } & Omit<RunStart, 'resumedFrom'> & { readonly resumedFromDir?: string };

export type MetricsLine =
  | StartLine
  | ({ readonly type: 'step' } & StepRecord)
  | ({ readonly type: 'eval' } & EvalRecord)
  | { readonly type: 'samples'; readonly step: number; readonly samples: readonly SampleRecord[] }
  | ({ readonly type: 'checkpoint' } & CheckpointRecord)
  | ({ readonly type: 'end' } & RunEnd);

/** The step a line belongs to: where a resumed run cuts the file. */
export function lineStep(line: MetricsLine): number {
  switch (line.type) {
    case 'start':
      return line.startStep;
    case 'end':
      return line.steps;
    default:
      return line.step;
  }
}

/** One line of text (newline included) for a record. */
export function formatMetricsLine(line: MetricsLine): string {
  return `${JSON.stringify(line)}\n`;
}

/**
 * The lines of a metrics.jsonl text that parse as objects with a known `type` (a torn or foreign
 * line is skipped); null numbers come back as NaN.
 */
export function parseMetricsJsonl(text: string): MetricsLine[] {
  const out: MetricsLine[] = [];
  for (const raw of text.split('\n')) {
    if (raw.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(raw, (_key, v: unknown) => (v === null ? NaN : v));
    } catch {
      continue;
    }
    if (typeof value === 'object' && value !== null && TYPES.has((value as { type?: unknown }).type as string)) out.push(value as MetricsLine);
  }
  return out;
}

/** The file's lines, or none when it does not exist. */
export async function readMetricsJsonl(path: string): Promise<MetricsLine[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new ExportError(`reading ${path} failed (${(e as Error).message}); check the run's output folder is readable.`, { cause: e });
  }
  return parseMetricsJsonl(text);
}

const TYPES = new Set(['start', 'step', 'eval', 'samples', 'checkpoint', 'end']);

/** Writes metrics.jsonl at `path` (see the file comment). */
export class MetricsJsonlObserver implements RunObserver {
  constructor(readonly path: string) {}

  async onStart(start: RunStart): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true }).catch((e: Error) => {
      throw new ExportError(`metrics.jsonl: cannot create the folder ${dirname(this.path)} (${e.message}); check output_dir.`, { cause: e });
    });
    let kept = start.startStep > 0 ? (await readMetricsJsonl(this.path)).filter((l) => lineStep(l) <= start.startStep) : [];
    if (start.startStep > 0 && !kept.some((l) => l.type === 'step' || l.type === 'eval')) kept = linesFromCheckpoint(start);
    await writeFileAtomic(this.path, [...kept, startLine(start)].map(formatMetricsLine).join(''));
  }

  onStep(record: StepRecord): Promise<void> {
    return this.append({ type: 'step', ...record });
  }

  onEval(record: EvalRecord): Promise<void> {
    return this.append({ type: 'eval', ...record });
  }

  onSamples(samples: readonly SampleRecord[]): Promise<void> {
    if (samples.length === 0) return Promise.resolve();
    return this.append({ type: 'samples', step: Math.max(...samples.map((s) => s.step)), samples });
  }

  onCheckpoint(record: CheckpointRecord): Promise<void> {
    return this.append({ type: 'checkpoint', ...record });
  }

  onEnd(end: RunEnd): Promise<void> {
    return this.append({ type: 'end', ...end });
  }

  private async append(line: MetricsLine): Promise<void> {
    try {
      await appendFile(this.path, formatMetricsLine(line), 'utf8');
    } catch (e) {
      throw new ExportError(
        `appending a ${line.type} record to ${this.path} failed (${(e as Error).message}); the lines before it are intact. Check free space and permissions of the output folder.`,
        { cause: e },
      );
    }
  }
}

function startLine(start: RunStart): StartLine {
  const { resumedFrom, ...rest } = start;
  return { type: 'start', ...rest, ...(resumedFrom ? { resumedFromDir: resumedFrom.dir } : {}) };
}

/**
 * A resumed run whose metrics.jsonl is gone (a fresh output folder, a copied checkpoint): the step
 * and eval records the checkpoint carries (RunStart.resumedFrom), in step order, evals after the
 * step they follow.
 */
function linesFromCheckpoint(start: RunStart): MetricsLine[] {
  const from = start.resumedFrom;
  if (!from) return [];
  const lines: MetricsLine[] = [
    ...from.steps.filter((r) => r.step <= start.startStep).map((r) => ({ type: 'step' as const, ...r })),
    ...from.evals.filter((r) => r.step <= start.startStep).map((r) => ({ type: 'eval' as const, ...r })),
  ];
  return lines.sort((a, b) => lineStep(a) - lineStep(b) || (a.type === 'step' ? -1 : 1) - (b.type === 'step' ? -1 : 1));
}
