/**
 * YAML → one frozen TrainConfig: parse, refuse unknown keys (naming the nearest valid key),
 * apply the command-line overrides, validate each value and the combinations, collect one
 * warning per key that cannot act here.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { CONFIG_KEYS, NESTED_CONFIG_KEYS, PROJECTIONS, REPORT_TO_VALUES, configSchema, type Projection, type TrainConfig } from './schema.js';
import { nearest } from './nearest.js';

/** Command-line overrides, applied over the YAML file (`--set` last). */
export interface ConfigOverrides {
  model?: string;
  dataset?: string;
  outputDir?: string;
  /** `key=value` strings; the value is read as YAML (numbers, booleans, null, [lists]); `a.b=v` sets a nested key. */
  set?: readonly string[];
}

export interface LoadedConfig {
  config: TrainConfig;
  /** One line per key that is accepted but cannot act here. */
  warnings: string[];
  /** The YAML file read, if any. */
  configPath: string | undefined;
}

/** Reads `configPath` (if given) and applies `overrides`. Throws ConfigError listing every problem. */
export function loadConfig(configPath?: string, overrides: ConfigOverrides = {}): LoadedConfig {
  let raw: unknown = {};
  if (configPath !== undefined) {
    let text: string;
    try {
      text = readFileSync(configPath, 'utf8');
    } catch (e) {
      throw new ConfigError(`--config ${configPath}: cannot read the file (${(e as Error).message}).`, { cause: e });
    }
    raw = parseConfigYaml(text, configPath);
    raw = relativeToFile(raw as Record<string, unknown>, dirname(resolve(configPath)));
  }
  return { ...resolveConfig(raw, configPath ?? 'defaults', overrides), configPath };
}

/**
 * `model_id` / `dataset_id` written as `./…` or `../…` in a config file are relative to that
 * file's folder (so shipped configs find the bundled data from any working directory); other
 * values, and command-line overrides, are left for resolution against the working directory.
 */
function relativeToFile(raw: Record<string, unknown>, dir: string): Record<string, unknown> {
  const out = { ...raw };
  for (const key of ['model_id', 'dataset_id']) {
    const v = out[key];
    if (typeof v === 'string' && (v.startsWith('./') || v.startsWith('../'))) out[key] = resolve(dir, v);
  }
  return out;
}

/** Parses YAML text; the top level must be a mapping (an empty file is `{}`). */
export function parseConfigYaml(text: string, where: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    const pos = e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    throw new ConfigError(`${where}: not valid YAML${pos}: ${(e as Error).message.split('\n')[0]}`, { cause: e });
  }
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${where}: the top level must be a mapping of keys to values, found ${Array.isArray(raw) ? 'a list' : typeof raw}.`);
  }
  return raw as Record<string, unknown>;
}

/** Applies overrides to an already-parsed mapping and validates it; `where` names the source in messages. */
export function resolveConfig(raw: unknown, where: string, overrides: ConfigOverrides = {}): Omit<LoadedConfig, 'configPath'> {
  const input: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  const problems: string[] = [];
  for (const key of Object.keys(input)) {
    if (!CONFIG_KEYS.includes(key)) problems.push(`unknown key '${key}'; did you mean '${nearest(key, CONFIG_KEYS)}'?`);
  }
  const kwargs = input.lr_scheduler_kwargs;
  if (kwargs !== null && typeof kwargs === 'object' && !Array.isArray(kwargs)) {
    for (const k of Object.keys(kwargs)) {
      const valid = NESTED_CONFIG_KEYS.lr_scheduler_kwargs;
      if (!valid.includes(k)) problems.push(`unknown key 'lr_scheduler_kwargs.${k}'; did you mean 'lr_scheduler_kwargs.${nearest(k, valid)}'?`);
    }
  }
  if (overrides.model !== undefined) input.model_id = overrides.model;
  if (overrides.dataset !== undefined) input.dataset_id = overrides.dataset;
  if (overrides.outputDir !== undefined) input.output_dir = overrides.outputDir;
  for (const assignment of overrides.set ?? []) {
    const problem = applySet(input, assignment);
    if (problem !== undefined) problems.push(problem);
  }
  if (problems.length > 0) throw configError(where, problems);

  const parsed = configSchema.safeParse(input);
  if (!parsed.success) throw configError(where, parsed.error.issues.map((i) => describeIssue(i, input)));
  const { config, problems: crossProblems, warnings } = finish(parsed.data);
  if (crossProblems.length > 0) throw configError(where, crossProblems);
  return { config: deepFreeze(config), warnings };
}

function configError(where: string, problems: string[]): ConfigError {
  const list = problems.length === 1 ? ` ${problems[0]}` : `\n  - ${problems.join('\n  - ')}`;
  return new ConfigError(`${where}:${list}`);
}

/** `key=value` or `a.b=value` into `input`; returns a problem description or undefined. */
function applySet(input: Record<string, unknown>, assignment: string): string | undefined {
  const eq = assignment.indexOf('=');
  if (eq <= 0) return `--set ${assignment}: expected key=value`;
  const path = assignment.slice(0, eq).trim().split('.');
  const text = assignment.slice(eq + 1);
  let value: unknown;
  try {
    value = text.trim() === '' ? '' : parseYaml(text);
  } catch {
    value = text;
  }
  const [key, sub, ...rest] = path;
  if (!CONFIG_KEYS.includes(key)) return `--set ${assignment}: unknown key '${key}'; did you mean '${nearest(key, CONFIG_KEYS)}'?`;
  if (sub === undefined) {
    input[key] = value;
    return undefined;
  }
  const nested = NESTED_CONFIG_KEYS[key];
  if (nested === undefined || rest.length > 0) return `--set ${assignment}: '${key}' has no nested keys to set`;
  if (!nested.includes(sub)) return `--set ${assignment}: unknown key '${key}.${sub}'; did you mean '${key}.${nearest(sub, nested)}'?`;
  const prev = input[key];
  input[key] = { ...(prev !== null && typeof prev === 'object' ? prev : {}), [sub]: value };
  return undefined;
}

function describeIssue(issue: z.core.$ZodIssue, input: Record<string, unknown>): string {
  const path = issue.path.map(String).join('.');
  let found: unknown = input;
  for (const p of issue.path) found = found !== null && typeof found === 'object' ? (found as Record<string | number, unknown>)[p as string] : undefined;
  if (issue.code === 'invalid_value' && 'values' in issue) {
    const allowed = (issue.values as unknown[]).map((v) => JSON.stringify(v)).join(', ');
    const hint = typeof found === 'string' ? `; did you mean ${JSON.stringify(nearest(found, (issue.values as unknown[]).map(String)))}?` : '';
    return `${path}: must be one of ${allowed}, found ${JSON.stringify(found)}${hint}`;
  }
  if (issue.code === 'invalid_type' && issue.expected !== 'int') return `${path}: expected ${issue.expected}, found ${JSON.stringify(found)}`;
  if (issue.code === 'invalid_union') return `${path}: found ${JSON.stringify(found)}, which is not an accepted form (${issue.message})`;
  return `${path}: ${issue.message}, found ${JSON.stringify(found)}`;
}

type Parsed = z.output<typeof configSchema>;

/** Cross-key rules, normalisation and warnings. */
function finish(c: Parsed): { config: TrainConfig; problems: string[]; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];

  let targets: Projection[];
  if (c.lora_target_modules === 'all-linear') targets = [...PROJECTIONS];
  else {
    targets = [];
    for (const m of c.lora_target_modules) {
      if ((PROJECTIONS as readonly string[]).includes(m)) targets.push(m as Projection);
      else problems.push(`lora_target_modules: unknown module '${m}'; did you mean '${nearest(m, PROJECTIONS)}'? (allowed: ${PROJECTIONS.join(', ')} or "all-linear")`);
    }
    if (new Set(targets).size !== targets.length) problems.push(`lora_target_modules: lists a module twice (${c.lora_target_modules.join(', ')})`);
  }
  const reportToRaw = Array.isArray(c.report_to) ? c.report_to : [c.report_to];
  for (const r of reportToRaw) {
    if (!(REPORT_TO_VALUES as readonly string[]).includes(r)) problems.push(`report_to: unknown value '${r}'; did you mean '${nearest(r, REPORT_TO_VALUES)}'? (valid: ${REPORT_TO_VALUES.join(', ')}, or a list of them)`);
  }
  const reportTo = [...new Set(reportToRaw.flatMap((r) => (r === 'all' ? ['tensorboard', 'wandb'] : r === 'none' ? [] : [r])))];

  if (!Number.isInteger(c.test_size) && c.test_size >= 1) problems.push(`test_size: must be a fraction in [0, 1) or a whole row count ≥ 1, found ${c.test_size}`);
  if (c.use_4bit && c.use_8bit) problems.push('use_4bit and use_8bit: both true; choose one (this trainer implements use_4bit, NF4)');
  if (c.bnb_4bit_quant_type === 'fp4') problems.push('bnb_4bit_quant_type: only "nf4" is implemented, found "fp4"');
  if (c.fp16 && c.bf16) problems.push('fp16 and bf16: both true; set at most one');
  if (c.lr_scheduler_type === 'cosine_with_min_lr' && c.lr_scheduler_kwargs.min_lr === undefined && c.lr_scheduler_kwargs.min_lr_rate === undefined) {
    problems.push('lr_scheduler_kwargs: cosine_with_min_lr needs min_lr (e.g. 1e-6) or min_lr_rate in [0, 1]');
  }
  if (c.lr_scheduler_kwargs.min_lr !== undefined && c.lr_scheduler_kwargs.min_lr >= c.learning_rate) {
    problems.push(`lr_scheduler_kwargs.min_lr: must be below learning_rate (${c.learning_rate}), found ${c.lr_scheduler_kwargs.min_lr}`);
  }
  const evalSteps = c.eval_steps ?? c.logging_steps;
  if (c.load_best_model_at_end) {
    if (c.eval_strategy === 'no') problems.push('load_best_model_at_end: needs eval_strategy "steps" or "epoch", found "no"');
    else if (c.save_strategy !== 'best' && c.save_strategy !== c.eval_strategy) {
      problems.push(`load_best_model_at_end: save_strategy ("${c.save_strategy}") must equal eval_strategy ("${c.eval_strategy}")`);
    } else if (c.eval_strategy === 'steps' && c.save_strategy === 'steps' && c.save_steps % evalSteps !== 0) {
      problems.push(`load_best_model_at_end: save_steps (${c.save_steps}) must be a multiple of eval_steps (${evalSteps})`);
    }
  }
  if (c.export_modelfile && c.export_gguf === null && !c.export_lora_gguf) {
    problems.push('export_modelfile: the Modelfile needs a GGUF to load; set export_gguf (e.g. q8_0) or export_lora_gguf, or export_modelfile: false');
  }
  if (c.early_stopping_patience !== null && c.eval_strategy === 'no') {
    problems.push('early_stopping_patience: needs eval_strategy "steps" or "epoch", found "no"');
  }
  if (c.metric_for_best_model === 'loss' || c.metric_for_best_model === 'eval_loss') {
    if (c.greater_is_better) problems.push(`greater_is_better: must be false for ${c.metric_for_best_model} (lower is better)`);
  }

  if (c.push_to_hub) warnings.push('push_to_hub: training does not upload (no network access is assumed); upload the exported adapter separately.');
  if (reportTo.includes('wandb')) warnings.push('report_to wandb: nothing is uploaded from here; TensorBoard event files are written under output_dir/runs/ instead; sync them with: wandb sync --sync-tensorboard DIR (the run prints DIR).');
  if (c.use_8bit) warnings.push('use_8bit: LLM.int8 is not implemented; the base stays bf16 (set use_4bit for NF4).');
  if (c.optim.startsWith('paged_')) {
    warnings.push(`optim ${c.optim}: runs unpaged (its states stay in GPU memory, counted in the memory plan; paging to host memory is a bitsandbytes CUDA feature).`);
  }
  if (c.auto_find_batch_size) warnings.push('auto_find_batch_size: ignored; the memory plan checks the batch before training starts.');
  if (c.preprocessing !== null && c.preprocessing !== undefined) warnings.push('preprocessing: accepted and unused (as in the seed).');
  if (c.wandb_project !== null && !reportTo.includes('wandb')) warnings.push('wandb_project: set but report_to does not include wandb; it has no effect.');

  const config: TrainConfig = { ...c, lora_target_modules: targets, report_to: reportTo, eval_steps: evalSteps };
  return { config, problems, warnings };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** The configuration of an empty YAML file: every default. */
export function defaultConfig(): TrainConfig {
  return resolveConfig({}, 'defaults').config;
}
