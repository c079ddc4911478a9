/**
 * The data path of a run, config → tokenized train and eval examples:
 * resolve dataset_id (local or Hub) → read the files per split → detect the format → convert
 * rows (bad rows counted with their row numbers, the run refused above max_bad_row_fraction) →
 * choose the eval split → render with the chat template and mark the loss → truncate at
 * max_seq_length (examples left with no trained token are dropped and counted).
 */
import type { TrainConfig, DatasetFormatName } from '../config/schema.js';
import { CheckpointError, DataError } from '../errors.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { convertRows, resolveFormat, type BadRow, type FormatOptions, type SourcedExample } from './formats.js';
import { TOKENIZER_FILES, DATASET_FILES, resolveRepo, type HubOptions, type ResolvedRepo } from './hub.js';
import { readDataset, type RawDataset, type SplitName } from './read.js';
import { lossTokenCount, tokenizeExample, type RenderOptions, type TokenizedExample } from './render.js';
import { chooseEvalSplit } from './split.js';

export interface LoadedExamples {
  dataset: ResolvedRepo;
  raw: RawDataset;
  format: DatasetFormatName;
  /** Usable rows per split (validation/test only when the dataset has them). */
  examples: Partial<Record<SplitName, SourcedExample[]>>;
  /** Rows read per split, usable or not. */
  rowCounts: Partial<Record<SplitName, number>>;
  bad: BadRow[];
}

export function formatOptions(config: TrainConfig): FormatOptions {
  return {
    format: config.dataset_format,
    textField: config.dataset_text_field,
    instructionFormat: config.instruction_format,
    systemPrompt: config.system_prompt,
    userPrefix: config.user_prefix,
  };
}

export function renderOptions(config: TrainConfig): RenderOptions & { maxSeqLength: number } {
  return { completionOnlyLoss: config.completion_only_loss, enableThinking: config.enable_thinking, maxSeqLength: config.max_seq_length };
}

/** Resolves, reads and converts the dataset; no tokenizer needed. */
export async function loadExamples(config: TrainConfig, hub: HubOptions): Promise<LoadedExamples> {
  const dataset = await resolveRepo(config.dataset_id, 'dataset', hub, { revision: config.dataset_revision, include: DATASET_FILES });
  const raw = await readDataset(dataset.path, { train: config.train_split, eval: config.eval_split });
  const trainRows = raw.splits.train;
  if (trainRows === undefined || trainRows.length === 0) {
    throw new DataError(`dataset_id "${config.dataset_id}": no train rows (files: ${raw.files.map((f) => `${f.file} → ${f.split}`).join(', ') || 'none'}).`);
  }
  const opts = formatOptions(config);
  const format = resolveFormat(trainRows, opts, `dataset_id "${config.dataset_id}"`);
  const examples: LoadedExamples['examples'] = {};
  const rowCounts: LoadedExamples['rowCounts'] = {};
  const bad: BadRow[] = [];
  for (const split of ['train', 'validation', 'test'] as const) {
    const rows = raw.splits[split];
    if (rows === undefined) continue;
    const converted = convertRows(rows, split, format, opts);
    examples[split] = converted.examples;
    rowCounts[split] = rows.length;
    bad.push(...converted.bad);
  }
  return { dataset, raw, format, examples, rowCounts, bad };
}

/** Bad rows as lines "file row N: reason", at most `limit` of them. */
export function formatBadRows(bad: readonly BadRow[], limit = 10): string {
  const lines = bad.slice(0, limit).map((b) => `  ${b.file} row ${b.row} (${b.split}): ${b.reason}`);
  if (bad.length > limit) lines.push(`  … and ${bad.length - limit} more`);
  return lines.join('\n');
}

/** Throws when more than max_bad_row_fraction of the rows is unusable. */
export function checkBadRows(loaded: LoadedExamples, maxFraction: number): void {
  const total = Object.values(loaded.rowCounts).reduce((s, n) => s + n, 0);
  const share = total === 0 ? 0 : loaded.bad.length / total;
  if (share > maxFraction) {
    throw new DataError(
      `dataset_id "${loaded.dataset.path}": ${loaded.bad.length} of ${total} rows (${(share * 100).toFixed(1)}%) are unusable, ` +
        `more than max_bad_row_fraction ${maxFraction}:\n${formatBadRows(loaded.bad)}\nFix the rows or raise max_bad_row_fraction.`,
    );
  }
}

export interface TokenizedSplit {
  examples: TokenizedExample[];
  /** Examples cut at max_seq_length (kept). */
  truncated: number;
  /** Examples with no trained token left after truncation (dropped). */
  noLoss: number;
  /** Token count before truncation of every input example, dropped ones included. */
  fullLengths: number[];
}

export function tokenizeSplit(examples: readonly SourcedExample[], tok: QwenTokenizer, config: TrainConfig): TokenizedSplit {
  const opts = renderOptions(config);
  const out: TokenizedExample[] = [];
  let truncated = 0;
  let noLoss = 0;
  const fullLengths: number[] = [];
  for (const se of examples) {
    const t = tokenizeExample(se, tok, opts);
    fullLengths.push(t.fullLength);
    if (t.truncated) truncated++;
    if (lossTokenCount(t) === 0) noLoss++;
    else out.push(t);
  }
  return { examples: out, truncated, noLoss, fullLengths };
}

export interface PreparedDataset {
  loaded: LoadedExamples;
  train: TokenizedSplit;
  eval: TokenizedSplit;
  evalSource: 'validation split' | 'test_size' | 'none';
  /** One line for the log saying where the eval rows come from. */
  evalDescription: string;
}

/** Everything the training loop needs from the data, or an error saying why the data cannot train. */
export async function prepareDataset(config: TrainConfig, tok: QwenTokenizer, hub: HubOptions): Promise<PreparedDataset> {
  const loaded = await loadExamples(config, hub);
  checkBadRows(loaded, config.max_bad_row_fraction);
  const split = chooseEvalSplit(loaded.examples.train ?? [], loaded.examples.validation, {
    testSize: config.test_size,
    seed: config.seed,
    evalStrategy: config.eval_strategy,
  });
  const train = tokenizeSplit(split.train, tok, config);
  const evalSplit = tokenizeSplit(split.eval, tok, config);
  if (train.examples.length === 0) {
    throw new DataError(
      `dataset_id "${config.dataset_id}": no train example has a trained token within max_seq_length ${config.max_seq_length} ` +
        `(${train.noLoss} dropped); raise max_seq_length.`,
    );
  }
  return { loaded, train, eval: evalSplit, evalSource: split.source, evalDescription: split.description };
}

/**
 * The tokenizer of model_id without its weights (tokenizer files only). When the model cannot
 * be resolved (offline, not cached), falls back to the bundled Qwen3 tokenizer and says so.
 */
export async function resolveTokenizer(config: TrainConfig, hub: HubOptions): Promise<{ tokenizer: QwenTokenizer; note?: string }> {
  let model: ResolvedRepo;
  try {
    model = await resolveRepo(config.model_id, 'model', hub, { revision: config.model_revision, include: TOKENIZER_FILES });
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    return {
      tokenizer: await QwenTokenizer.load(),
      note: `model_id "${config.model_id}" could not be read (${e.message.split('\n')[0]}); using the bundled Qwen3 tokenizer.`,
    };
  }
  return { tokenizer: await QwenTokenizer.load(model.path) };
}
