/**
 * The loss-curve comparison's record: the printed table, and the JSON and Markdown files written
 * into --out (loss-curve-compare.json, loss-curve-compare.md).
 */
import type { ChangedKey } from './run-settings.js';
import { percent, type CurveComparison } from './curve-compare.js';

export const RECORD_FORMAT = 'prompt-lora-loss-curve-compare/1';
export const RECORD_FILES = { json: 'loss-curve-compare.json', markdown: 'loss-curve-compare.md' } as const;

/** One run as the record has it. */
export interface RunEntry {
  readonly dir: string;
  readonly log: string;
  readonly computeDtype: string;
  /** The trainer's `compute path: …` line, or null when the log has none. */
  readonly printedComputePath: string | null;
  /** Wall-clock seconds of the training command (null in --compare-only). */
  readonly wallSeconds: number | null;
  readonly exitCode: number | null;
}

export interface CompareRecord {
  readonly format: typeof RECORD_FORMAT;
  readonly createdAt: string;
  readonly command: string;
  readonly config: string;
  readonly device: string | null;
  readonly steps: number | null;
  readonly evalSteps: number | null;
  readonly tolerance: number;
  /** The config's training settings both runs keep, as resolved (key → value). */
  readonly keptFromConfig: Readonly<Record<string, unknown>>;
  /** What both runs change, with why; compute_dtype is per run (runs[…].computeDtype). */
  readonly changed: readonly ChangedKey[];
  readonly extraSets: readonly string[];
  readonly runs: { readonly f32: RunEntry; readonly tensorCores: RunEntry };
  readonly comparison: CurveComparison;
}

/** A finite number with 5 decimals, or its name (NaN). */
function num(x: number): string {
  return Number.isFinite(x) ? x.toFixed(5) : String(x);
}

/** The table: step | f32 eval loss | tensor-core eval loss | rel diff (Markdown pipes, readable in a terminal too). */
export function formatTable(c: CurveComparison): string[] {
  const lines = ['| step | f32 eval loss | tensor-core eval loss | rel diff |', '|---:|---:|---:|---:|'];
  for (const r of c.rows) lines.push(`| ${r.step} | ${num(r.f32)} | ${num(r.tensorCores)} | ${Number.isNaN(r.relDiff) ? 'NaN' : percent(r.relDiff)}${r.ok ? '' : ' ✗'} |`);
  return lines;
}

/** The verdict in one line. */
export function verdictLine(c: CurveComparison, tolerance: number): string {
  const worst = c.maxRelDiff === undefined ? 'no evaluations compared' : `max rel diff ${Number.isNaN(c.maxRelDiff) ? 'NaN' : percent(c.maxRelDiff)} (step ${c.maxRelDiffStep}) over ${c.rows.length} evaluations, tolerance ${percent(tolerance)}`;
  switch (c.verdict) {
    case 'pass':
      return `verdict: PASS: ${worst}`;
    case 'pass-same-path':
      return `verdict: PASS ON THE SAME PATH (smoke test only; the tensor-core path was not taken): ${worst}`;
    default:
      return `verdict: FAIL: ${worst}`;
  }
}

export function formatJson(r: CompareRecord): string {
  // NaN (a non-finite loss) is written as null, as metrics.jsonl does.
  return `${JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1)}\n`;
}

export function formatMarkdown(r: CompareRecord): string {
  const c = r.comparison;
  const out: string[] = [
    '# Loss curve: f32 path vs tensor cores (issue 11 item 7)',
    '',
    `${r.createdAt}; device: ${r.device ?? 'not probed (--compare-only)'}`,
    '',
    '```',
    r.command,
    '```',
    '',
    `Config: \`${r.config}\`, ${r.steps ?? '?'} steps, evaluation every ${r.evalSteps ?? '?'} steps, tolerance ${percent(r.tolerance)} (rel diff = |tc − f32| / |f32|).`,
    '',
    ...formatTable(c),
    '',
    `**${verdictLine(c, r.tolerance)}**`,
    '',
    ...c.problems.map((p) => `- problem: ${p}`),
    ...c.notes.map((n) => `- note: ${n}`),
    ...(c.problems.length + c.notes.length > 0 ? [''] : []),
    '## Runs',
    '',
    '| run | compute_dtype | printed compute path | wall s | exit | folder |',
    '|---|---|---|---:|---:|---|',
    ...(['f32', 'tensorCores'] as const).map((k) => {
      const e = r.runs[k];
      return `| ${k === 'f32' ? 'f32' : 'tensor-cores'} | ${e.computeDtype} | ${e.printedComputePath ?? '(none printed)'} | ${e.wallSeconds === null ? '' : e.wallSeconds.toFixed(1)} | ${e.exitCode ?? ''} | \`${e.dir}\` |`;
    }),
    '',
    '## Changed from the config (both runs)',
    '',
    '| key | value | why |',
    '|---|---|---|',
    ...r.changed.map((k) => `| ${k.key} | \`${k.value}\` | ${k.why} |`),
    '| compute_dtype | per run | float32 (the f32 reference) and float16 (tensor cores); auto with --allow-same-path |',
    ...r.extraSets.map((s) => `| (--set) | \`${s}\` | given on the command line |`),
    '',
    '## Kept from the config (both runs)',
    '',
    '| key | value |',
    '|---|---|',
    ...Object.entries(r.keptFromConfig).map(([k, v]) => `| ${k} | \`${JSON.stringify(v)}\` |`),
    '',
  ];
  return out.join('\n');
}
