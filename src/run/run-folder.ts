import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { resumeCommand } from '../config/command-line.js';
import type { TrainConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { openCheckpoint, listCheckpoints } from '../train/checkpoint-reader.js';
import { CHECKPOINT_FILES } from '../train/checkpoint-state.js';
import type { RecordedRecompute } from '../train/recompute-record.js';

/**
 * A run folder (output_dir) describes itself:
 *
 *   config.yaml     the run's resolved config (what `--resume DIR` and `export --run DIR` read)
 *   run.json        RunRecord: when the run started, what it was trained from (model id and the
 *                   folder it resolved to, dataset, revisions), the project's git commit, resumes,
 *                   and the recompute policy each start and resume trained with (what
 *                   `gradient_checkpointing: auto` chose; a resumed auto run keeps it)
 *   rendering.json  beside the final adapter: system prompt, user prefix, thinking switch and the
 *                   chat template the examples were rendered with
 *
 * A folder holds one run: a new run into a folder with another run's checkpoints or adapter is
 * refused unless overwrite (which removes that run's files first, `clearRunFolder`).
 */
export const RUN_FILES = { config: 'config.yaml', record: 'run.json', rendering: 'rendering.json' } as const;

export const RUN_RECORD_FORMAT = 'prompt-lora-run/1';

export interface RunRecord {
  readonly format: typeof RUN_RECORD_FORMAT;
  /** ISO time the run started; checkpoints saved before it belong to an earlier run. */
  readonly started_at: string;
  readonly model_id: string;
  readonly model_dir: string;
  readonly model_revision: string;
  readonly dataset_id: string;
  readonly dataset_revision: string;
  /** `git rev-parse HEAD` of the project, null outside a git checkout. */
  readonly project_commit: string | null;
  /** One entry per `--resume`: when, from which checkpoint, and the recompute it trained with. */
  readonly resumes: readonly { readonly at: string; readonly from: string; readonly recompute?: RecordedRecompute }[];
  /** The recompute policy the run started with (absent in records written before it was kept). */
  readonly recompute?: RecordedRecompute;
}

/** The project's git commit, or null when it is not a git checkout (or git is missing). */
export function projectCommit(root: string): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'], encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** run.json of `outputDir`, or undefined when there is none. */
export async function readRunRecord(outputDir: string): Promise<RunRecord | undefined> {
  const path = join(outputDir, RUN_FILES.record);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`${path}: cannot read it (${(e as Error).message})`, { cause: e });
  }
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: not valid JSON (${(e as Error).message}); remove it or start the run with --overwrite`, { cause: e });
  }
  const r = record as Partial<RunRecord>;
  if (r.format !== RUN_RECORD_FORMAT || typeof r.started_at !== 'string') {
    throw new ConfigError(`${path}: expected a run record of format ${RUN_RECORD_FORMAT} with started_at; remove it or start the run with --overwrite`);
  }
  return record as RunRecord;
}

/** Writes config.yaml and run.json (each through a temporary name). */
export async function writeRunFolder(outputDir: string, config: TrainConfig, record: RunRecord): Promise<void> {
  await mkdir(outputDir, { recursive: true });
  await writeFileAtomic(join(outputDir, RUN_FILES.config), stringifyYaml(config));
  await writeRunRecord(outputDir, record);
}

/** Writes run.json alone (through a temporary name), e.g. once the plan has chosen the recompute. */
export async function writeRunRecord(outputDir: string, record: RunRecord): Promise<void> {
  await writeFileAtomic(join(outputDir, RUN_FILES.record), `${JSON.stringify(record, null, 1)}\n`);
}

/** `record` with the recompute this start (or, resumed, this latest resume) trains with. */
export function withRecompute(record: RunRecord, recompute: RecordedRecompute, resumed: boolean): RunRecord {
  if (!resumed) return { ...record, recompute };
  const resumes = record.resumes.map((r, i) => (i === record.resumes.length - 1 ? { ...r, recompute } : r));
  return { ...record, resumes };
}

/** Writes rendering.json beside the final adapter. */
export async function writeRendering(outputDir: string, config: TrainConfig, chatTemplate: string): Promise<void> {
  const rendering = { system_prompt: config.system_prompt, user_prefix: config.user_prefix, enable_thinking: config.enable_thinking, chat_template: chatTemplate };
  await writeFileAtomic(join(outputDir, RUN_FILES.rendering), `${JSON.stringify(rendering, null, 1)}\n`);
}

/** What of an earlier run lies in `outputDir`: its checkpoints and final adapter (names, for messages). */
async function earlierRunOutputs(outputDir: string): Promise<string[]> {
  const found = (await listCheckpoints(outputDir)).map((c) => c.dir);
  if (existsSync(join(outputDir, 'adapter'))) found.push(join(outputDir, 'adapter'));
  return found;
}

/**
 * Before a new (not resumed) run: refuses a folder holding another run's checkpoints or adapter
 * unless `overwrite`, which removes that run's files first.
 */
export async function claimRunFolder(outputDir: string, overwrite: boolean, log: (line: string) => void): Promise<void> {
  const earlier = await earlierRunOutputs(outputDir);
  if (earlier.length === 0) return;
  if (!overwrite) {
    throw new ConfigError(
      `output_dir ${outputDir} holds another run (${earlier.slice(-3).join(', ')}${earlier.length > 3 ? ` and ${earlier.length - 3} more` : ''}). ` +
        `Continue that run with \`${resumeCommand(outputDir)}\`, choose another --output-dir, or pass --overwrite (overwrite_output_dir: true) to remove it and start afresh.`,
    );
  }
  const removed = await clearRunFolder(outputDir);
  log(`overwrite: removed the earlier run's ${removed.join(', ')} from ${outputDir}`);
}

/** Removes a run's checkpoints, metrics, report, adapter, exports and run files; returns the names removed. */
export async function clearRunFolder(outputDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(outputDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const runFile = (n: string): boolean =>
    /^checkpoint-\d+/.test(n) ||
    ['metrics.jsonl', 'report.html', 'adapter', 'merged', 'Modelfile', 'Modelfile.adapter', RUN_FILES.config, RUN_FILES.record, RUN_FILES.rendering].includes(n) ||
    n.endsWith('.gguf');
  const removed = names.filter(runFile);
  for (const n of removed) await rm(join(outputDir, n), { recursive: true, force: true });
  return removed;
}

/**
 * The newest checkpoint of the run recorded in `outputDir` (run.json): checkpoints saved before the
 * recorded run started belong to another run and are never resumed. Without run.json (a folder of
 * an older version) the newest checkpoint.
 */
export async function runCheckpoint(outputDir: string, how: string): Promise<string> {
  const record = await readRunRecord(outputDir);
  const all = await listCheckpoints(outputDir);
  const ours: string[] = [];
  for (const c of all) {
    if (record === undefined) ours.push(c.dir);
    else {
      const opened = await openCheckpoint(c.dir);
      if (Date.parse(opened.state.savedAt) >= Date.parse(record.started_at)) ours.push(c.dir);
    }
  }
  const latest = ours[ours.length - 1];
  if (latest === undefined) {
    const others = all.length > 0 ? ` (${all.map((c) => c.dir).join(', ')} predate the run recorded in ${join(outputDir, RUN_FILES.record)}, started ${record?.started_at})` : '';
    throw new ConfigError(
      `${how}: no complete checkpoint (checkpoint-<step>/ with ${CHECKPOINT_FILES.state}) of the run recorded in ${resolve(outputDir)}${others}; run without --resume to start afresh, or name a checkpoint folder`,
    );
  }
  return latest;
}

/**
 * The checkpoint a resume request names: 'latest' is the newest checkpoint of the run recorded in
 * `outputDir`; a path is a checkpoint folder, or a run folder (then its run's newest checkpoint).
 */
export async function resolveResumeDir(request: string, outputDir: string): Promise<string> {
  if (request === 'latest') return runCheckpoint(outputDir, '--resume');
  if (existsSync(join(request, CHECKPOINT_FILES.state))) return request;
  if (!existsSync(request)) throw new ConfigError(`--resume ${request}: no such folder; name a checkpoint folder (output_dir/checkpoint-<step>) or a run's output_dir`);
  return runCheckpoint(request, `--resume ${request}`);
}
