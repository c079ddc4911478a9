/**
 * The dataset report of `prompt-lora validate`: format, rows per split, bad rows, token lengths
 * against max_seq_length, truncation, duplicates, train/validation overlap and the seed's quality
 * gate. `errors` are reasons the data cannot train (non-zero exit); `warnings` are advice.
 */
import type { TrainConfig } from '../config/schema.js';
import { TrainerError } from '../errors.js';
import type { QwenTokenizer } from '../model/tokenizer.js';
import { checkBadRows, loadExamples, tokenizeSplit, type LoadedExamples } from './dataset.js';
import { nearDuplicatePairs } from './dedupe.js';
import { promptText, responseText, type BadRow, type SourcedExample } from './formats.js';
import type { HubOptions } from './hub.js';
import { QUALITY_CHECKS, SEED_QUALITY_LIMITS, checkResponse, topOpenings, topPhrases, type PhraseShare, type QualityCheck } from './quality.js';
import type { SplitName } from './read.js';
import { chooseEvalSplit } from './split.js';

/** Token-sort ratio at or above which two responses count as near duplicates (the seed's builder). */
export const NEAR_DUPLICATE_RATIO = 85;

export interface RowRef {
  split: SplitName;
  file: string;
  row: number;
}

export interface LengthStats {
  examples: number;
  mean: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
  /** Examples longer than max_seq_length (cut). */
  truncated: number;
  /** Examples left with no trained token after the cut (dropped). */
  noLoss: number;
  /** Counts per bin of width max_seq_length/8; the last bin is "> max_seq_length". */
  histogram: { from: number; to: number | null; count: number }[];
}

export interface DataReport {
  dataset: string;
  resolvedPath: string;
  source: 'local' | 'cache' | 'hub';
  format: string;
  files: { file: string; split: string }[];
  rows: Partial<Record<SplitName, { read: number; usable: number }>>;
  badRows: { count: number; share: number; rows: BadRow[] };
  evalSplit: string;
  maxSeqLength: number;
  tokens: Partial<Record<SplitName, LengthStats>>;
  duplicates: { exact: { a: RowRef; b: RowRef }[]; near: { a: RowRef; b: RowRef; ratio: number }[] };
  overlap: { exact: { train: RowRef; validation: RowRef }[]; near: { train: RowRef; validation: RowRef; ratio: number }[] };
  quality: Record<QualityCheck, RowRef[]>;
  topPhrases: PhraseShare[];
  topOpenings: PhraseShare[];
  notes: string[];
  warnings: string[];
  errors: string[];
}

function ref(e: SourcedExample): RowRef {
  return { split: e.split, file: e.file, row: e.row };
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function lengthStats(lengths: number[], maxSeq: number, truncated: number, noLoss: number): LengthStats {
  const s = [...lengths].sort((a, b) => a - b);
  const width = Math.max(1, Math.ceil(maxSeq / 8));
  const histogram: LengthStats['histogram'] = [];
  for (let from = 0; from < maxSeq; from += width) histogram.push({ from, to: Math.min(from + width, maxSeq), count: 0 });
  histogram.push({ from: maxSeq, to: null, count: 0 });
  for (const n of s) histogram[n > maxSeq ? histogram.length - 1 : Math.min(histogram.length - 2, Math.floor((n - 1) / width))].count++;
  return {
    examples: s.length,
    mean: s.length === 0 ? 0 : s.reduce((a, b) => a + b, 0) / s.length,
    p50: percentile(s, 50),
    p90: percentile(s, 90),
    p95: percentile(s, 95),
    p99: percentile(s, 99),
    max: s.length === 0 ? 0 : s[s.length - 1],
    truncated,
    noLoss,
    histogram,
  };
}

/** The instruction a response is compared against for echoing: user text without the configured prefix. */
function instructionOf(e: SourcedExample, prefix: string): string {
  const p = promptText(e.example);
  return prefix !== '' ? p.split(prefix).join('') : p;
}

/** Builds the report; a dataset that cannot be read at all becomes a report with one error. */
export async function buildDataReport(config: TrainConfig, tok: QwenTokenizer, hub: HubOptions): Promise<DataReport> {
  let loaded: LoadedExamples;
  try {
    loaded = await loadExamples(config, hub);
  } catch (e) {
    if (!(e instanceof TrainerError)) throw e;
    return emptyReport(config, e.message);
  }
  const report = emptyReport(config);
  report.resolvedPath = loaded.dataset.path;
  report.source = loaded.dataset.source;
  report.format = loaded.format;
  report.files = loaded.raw.files;
  const total = Object.values(loaded.rowCounts).reduce((s, n) => s + n, 0);
  report.badRows = { count: loaded.bad.length, share: total === 0 ? 0 : loaded.bad.length / total, rows: loaded.bad };
  try {
    checkBadRows(loaded, config.max_bad_row_fraction);
  } catch (e) {
    if (!(e instanceof TrainerError)) throw e;
    report.errors.push(`${loaded.bad.length} of ${total} rows unusable (${(report.badRows.share * 100).toFixed(1)}%), above max_bad_row_fraction ${config.max_bad_row_fraction}`);
  }
  if (loaded.bad.length > 0) report.warnings.push(`${loaded.bad.length} unusable rows skipped (listed under bad rows)`);

  const all: SourcedExample[] = [];
  for (const split of ['train', 'validation', 'test'] as const) {
    const ex = loaded.examples[split];
    if (ex === undefined) continue;
    report.rows[split] = { read: loaded.rowCounts[split] ?? 0, usable: ex.length };
    const t = tokenizeSplit(ex, tok, config);
    report.tokens[split] = lengthStats(t.fullLengths, config.max_seq_length, t.truncated, t.noLoss);
    if (split !== 'test') all.push(...ex);
    if (split === 'train' && t.examples.length === 0) report.errors.push(`no train example keeps a trained token within max_seq_length ${config.max_seq_length}`);
    if (t.truncated > 0) report.warnings.push(`${split}: ${t.truncated} examples longer than max_seq_length ${config.max_seq_length} are cut`);
    if (t.noLoss > 0) report.warnings.push(`${split}: ${t.noLoss} examples have no trained token after the cut and are dropped`);
  }
  if (loaded.examples.test !== undefined) report.notes.push('the test split is reported but not used for training or evaluation');
  if (loaded.format === 'text' && config.completion_only_loss) {
    report.notes.push('text format: the loss covers the whole text (no turn boundaries to mask); use messages or instruction/response columns for completion-only loss');
  }

  if ((loaded.examples.train ?? []).length > 0) {
    try {
      report.evalSplit = chooseEvalSplit(loaded.examples.train ?? [], loaded.examples.validation, {
        testSize: config.test_size,
        seed: config.seed,
        evalStrategy: config.eval_strategy,
      }).description;
    } catch (e) {
      if (!(e instanceof TrainerError)) throw e;
      report.errors.push(e.message);
    }
  }

  const train = loaded.examples.train ?? [];
  const trainResponses = train.map((e) => responseText(e.example));
  const exactKey = (e: SourcedExample) => JSON.stringify([promptText(e.example), responseText(e.example)].map((s) => s.trim().toLowerCase()));
  const firstByKey = new Map<string, SourcedExample>();
  for (const e of train) {
    const k = exactKey(e);
    const first = firstByKey.get(k);
    if (first === undefined) firstByKey.set(k, e);
    else report.duplicates.exact.push({ a: ref(first), b: ref(e) });
  }
  for (const p of nearDuplicatePairs(trainResponses, NEAR_DUPLICATE_RATIO)) report.duplicates.near.push({ a: ref(train[p.a]), b: ref(train[p.b]), ratio: round1(p.ratio) });
  if (report.duplicates.exact.length > 0) report.warnings.push(`${report.duplicates.exact.length} exact duplicate train examples`);
  if (report.duplicates.near.length > 0) report.warnings.push(`${report.duplicates.near.length} near-duplicate train response pairs (token-sort ratio ≥ ${NEAR_DUPLICATE_RATIO})`);

  const validation = loaded.examples.validation ?? [];
  if (validation.length > 0) {
    const trainPrompts = new Map(train.map((e) => [promptText(e.example).trim().toLowerCase(), e]));
    const trainResp = new Map(train.map((e) => [responseText(e.example).trim().toLowerCase(), e]));
    for (const v of validation) {
      const p = promptText(v.example).trim().toLowerCase();
      const hit = (p !== '' ? trainPrompts.get(p) : undefined) ?? trainResp.get(responseText(v.example).trim().toLowerCase());
      if (hit !== undefined) report.overlap.exact.push({ train: ref(hit), validation: ref(v) });
    }
    const valResponses = validation.map((e) => responseText(e.example));
    for (const p of nearDuplicatePairs(trainResponses, NEAR_DUPLICATE_RATIO, valResponses)) {
      report.overlap.near.push({ train: ref(train[p.a]), validation: ref(validation[p.b]), ratio: round1(p.ratio) });
    }
    if (report.overlap.exact.length > 0) report.warnings.push(`${report.overlap.exact.length} validation rows repeat a train prompt or response exactly`);
    if (report.overlap.near.length > 0) report.warnings.push(`${report.overlap.near.length} train/validation response pairs are near duplicates`);
  }

  for (const e of all) {
    for (const c of checkResponse(responseText(e.example), instructionOf(e, config.user_prefix))) report.quality[c].push(ref(e));
  }
  for (const c of QUALITY_CHECKS) {
    if (report.quality[c].length > 0) report.warnings.push(`quality ${c}: ${report.quality[c].length} rows`);
  }
  const responses = all.map((e) => responseText(e.example));
  report.topPhrases = topPhrases(responses, 4, 5);
  report.topOpenings = topOpenings(responses, 2, 5);
  for (const p of report.topPhrases) {
    if (responses.length >= 20 && p.share > SEED_QUALITY_LIMITS.maxPhraseShare) report.warnings.push(`the phrase "${p.phrase}" appears in ${(p.share * 100).toFixed(0)}% of responses`);
  }
  return report;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

function emptyReport(config: TrainConfig, error?: string): DataReport {
  const quality = Object.fromEntries(QUALITY_CHECKS.map((c) => [c, [] as RowRef[]])) as Record<QualityCheck, RowRef[]>;
  return {
    dataset: config.dataset_id,
    resolvedPath: '',
    source: 'local',
    format: 'unknown',
    files: [],
    rows: {},
    badRows: { count: 0, share: 0, rows: [] },
    evalSplit: '',
    maxSeqLength: config.max_seq_length,
    tokens: {},
    duplicates: { exact: [], near: [] },
    overlap: { exact: [], near: [] },
    quality,
    topPhrases: [],
    topOpenings: [],
    notes: [],
    warnings: [],
    errors: error === undefined ? [] : [error],
  };
}
