/**
 * `--dry-run`: what a run would train on, without loading weights onto the GPU: one rendered
 * example with its loss mask visible (trained tokens inside ⟦ ⟧), token counts, the eval split,
 * batches and optimizer steps per epoch, and the memory plan once that module exists (passed in
 * as a hook, so this file does not depend on it).
 */
import type { TrainConfig } from '../config/schema.js';
import { planBatches, stepsPerEpoch } from '../data/batching.js';
import { formatBadRows, prepareDataset, resolveTokenizer } from '../data/dataset.js';
import { hubOptionsFromEnv, type HubOptions } from '../data/hub.js';
import { EMBEDDED_MODEL_ID } from '../model/embedded.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { lossTokenCount, showLossMask } from '../data/render.js';

/** The batch shape the memory plan is asked about. */
export interface DryRunBatchShape {
  /** Rows per micro-batch (per_device_train_batch_size). */
  B: number;
  /** Tokens per row: max_seq_length when packing, else the longest padded batch. */
  T: number;
}

/** Renders the memory plan table for `config` at `shape` (the memory-plan issue provides it). */
export type MemoryPlanHook = (config: TrainConfig, shape: DryRunBatchShape) => string | Promise<string>;

export interface DryRunOptions {
  env?: Readonly<Record<string, string | undefined>>;
  out?: (text: string) => void;
  memoryPlan?: MemoryPlanHook;
  /** Config warnings to print first (from loadConfig). */
  warnings?: readonly string[];
}

export interface DryRunSummary {
  tokenizer: string;
  tokenizerNote?: string;
  format: string;
  example: { source: string; tokens: number; trainedTokens: number; maskView: string };
  train: { examples: number; tokens: number; targets: number; truncated: number; dropped: number };
  eval: { examples: number; description: string };
  badRows: number;
  badRowList: string;
  packing: boolean;
  rowsPerEpoch: number;
  batchesPerEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  batchShape: DryRunBatchShape;
  memoryPlan: string | undefined;
}

/**
 * The tokenizer a run of `config` uses, without weights: the embedded model's is the bundled Qwen3
 * tokenizer (no note); otherwise model_id's (resolveTokenizer, with its fallback note).
 */
export async function runTokenizer(config: TrainConfig, hub: HubOptions): Promise<{ tokenizer: QwenTokenizer; note?: string }> {
  if (config.model_id === EMBEDDED_MODEL_ID) return { tokenizer: await QwenTokenizer.load() };
  return resolveTokenizer(config, hub);
}

/** Prepares the data exactly as training would and prints the summary; returns it too. */
export async function runDryRun(config: TrainConfig, opts: DryRunOptions = {}): Promise<DryRunSummary> {
  const out = opts.out ?? ((s: string) => console.log(s));
  const hub = hubOptionsFromEnv(opts.env ?? process.env);
  const { tokenizer, note } = await runTokenizer(config, hub);
  const data = await prepareDataset(config, tokenizer, hub);
  const train = data.train.examples;
  const plan = planBatches(train, {
    batchSize: config.per_device_train_batch_size,
    maxSeqLength: config.max_seq_length,
    packing: config.packing,
    groupByLength: config.group_by_length,
    seed: config.seed,
    padTokenId: tokenizer.padTokenId ?? tokenizer.eosTokenId,
  });
  const perEpoch = stepsPerEpoch(plan, config.gradient_accumulation_steps);
  const longestRow = Math.max(...plan.rowLengths);
  const batchShape = { B: config.per_device_train_batch_size, T: config.packing ? config.max_seq_length : Math.min(config.max_seq_length, Math.ceil(longestRow / 8) * 8) };
  const first = train[0];
  const summary: DryRunSummary = {
    tokenizer: tokenizer.source,
    tokenizerNote: note,
    format: data.loaded.format,
    example: {
      source: `${first.file}:${first.row}`,
      tokens: first.ids.length,
      trainedTokens: lossTokenCount(first),
      maskView: showLossMask(tokenizer, first.ids, first.loss),
    },
    train: {
      examples: train.length,
      tokens: train.reduce((s, e) => s + e.ids.length, 0),
      targets: train.reduce((s, e) => s + lossTokenCount(e), 0),
      truncated: data.train.truncated,
      dropped: data.train.noLoss,
    },
    eval: { examples: data.eval.examples.length, description: data.evalDescription },
    badRows: data.loaded.bad.length,
    badRowList: formatBadRows(data.loaded.bad),
    packing: config.packing,
    rowsPerEpoch: plan.rows.length,
    batchesPerEpoch: plan.batchesPerEpoch,
    stepsPerEpoch: perEpoch,
    totalSteps: config.max_steps > 0 ? config.max_steps : Math.ceil(config.num_train_epochs * perEpoch),
    batchShape,
    memoryPlan: opts.memoryPlan === undefined ? undefined : await opts.memoryPlan(config, batchShape),
  };
  for (const w of opts.warnings ?? []) out(`warning: ${w}`);
  out(formatDryRun(summary, config));
  return summary;
}

export function formatDryRun(s: DryRunSummary, config: TrainConfig): string {
  const lines = [
    `model       ${config.model_id} (tokenizer ${s.tokenizer})`,
    ...(s.tokenizerNote !== undefined ? [`note        ${s.tokenizerNote}`] : []),
    `dataset     ${config.dataset_id} (${s.format})`,
    `example     ${s.example.source}: ${s.example.tokens} tokens, ${s.example.trainedTokens} trained (inside ⟦ ⟧)`,
    '─'.repeat(72),
    s.example.maskView,
    '─'.repeat(72),
    `train       ${s.train.examples} examples, ${s.train.tokens} tokens, ${s.train.targets} trained; ${s.train.truncated} truncated at max_seq_length ${config.max_seq_length}, ${s.train.dropped} dropped (nothing left to train)`,
    s.eval.description,
    ...(s.badRows > 0 ? [`bad rows    ${s.badRows} skipped:`, s.badRowList] : []),
    `batches     ${s.packing ? `packing: ${s.rowsPerEpoch} rows of ${config.max_seq_length} tokens` : `padding${config.group_by_length ? ', grouped by length' : ''}: ${s.rowsPerEpoch} rows`}; ` +
      `${s.batchesPerEpoch} batches of ${config.per_device_train_batch_size} per epoch`,
    `steps       ${s.stepsPerEpoch} per epoch (gradient_accumulation_steps ${config.gradient_accumulation_steps}), ${s.totalSteps} in all` +
      (config.max_steps > 0 ? ' (max_steps)' : ` (${config.num_train_epochs} epochs)`),
    `batch       B ${s.batchShape.B} × T ${s.batchShape.T}`,
    s.memoryPlan ?? 'memory      (the memory plan is not available yet)',
  ];
  return lines.join('\n');
}
