/**
 * `model_id` / `dataset_id` → a local folder. A path that exists is used as is; otherwise the id
 * is a Hugging Face Hub repository, resolved with `@huggingface/hub` into the standard cache
 * layout `<cache>/{models|datasets}--owner--name/{blobs, snapshots/<commit>, refs/<revision>}`
 * that Python tools share, so files they already downloaded are reused (no request is made for a
 * file whose snapshot entry exists). Offline mode reads only the cache.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { HubApiError, datasetInfo, downloadFileToCacheDir, listFiles, modelInfo } from '@huggingface/hub';
import { CheckpointError, ConfigError, DataError, TrainerError } from '../errors.js';

export type RepoKind = 'model' | 'dataset';

/** Where and how to reach the Hub; built from the environment by the CLI (`hubOptionsFromEnv`). */
export interface HubOptions {
  /** The hub cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir: string;
  /** HF_TOKEN, for private and gated repositories. */
  token: string | undefined;
  /** HF_HUB_OFFLINE=1: never touch the network, use the cache only. */
  offline: boolean;
  /** HF_ENDPOINT, else https://huggingface.co. */
  hubUrl: string;
  /** Replaces global fetch (tests, proxies). */
  fetch?: typeof fetch;
}

const TRUE_VALUES = new Set(['1', 'true', 'yes', 'on']);

/** The Hub settings Python's huggingface_hub reads from these same variables. */
export function hubOptionsFromEnv(env: Readonly<Record<string, string | undefined>>, home: string = homedir()): HubOptions {
  const hfHome = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(home, '.cache'), 'huggingface');
  return {
    cacheDir: env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(hfHome, 'hub'),
    token: env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN ?? readTokenFile(join(hfHome, 'token')),
    offline: TRUE_VALUES.has((env.HF_HUB_OFFLINE ?? env.TRANSFORMERS_OFFLINE ?? '').toLowerCase()),
    hubUrl: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
  };
}

function readTokenFile(path: string): string | undefined {
  try {
    const t = readFileSync(path, 'utf8').trim();
    return t === '' ? undefined : t;
  } catch {
    return undefined;
  }
}

export interface ResolvedRepo {
  /** Local folder holding the files. */
  path: string;
  source: 'local' | 'cache' | 'hub';
  /** Hub id and commit when the folder is a cache snapshot. */
  repo?: string;
  commit?: string;
}

export interface ResolveOptions {
  revision?: string;
  /** Which repository files to download (default: all). */
  include?: (path: string) => boolean;
}

/** Files a training run needs from a model repository: weights, configs, tokenizer. */
export const MODEL_FILES = (p: string): boolean =>
  !p.includes('/') && (/\.(json|safetensors|jinja|txt|model)$/.test(p) || p.startsWith('tokenizer'));
/** Only what tokenizing needs (validate, dry-run): no weights. */
export const TOKENIZER_FILES = (p: string): boolean =>
  ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'chat_template.json', 'config.json', 'generation_config.json'].includes(p);
/** Data files of a dataset repository (any folder depth). */
export const DATASET_FILES = (p: string): boolean => /\.(jsonl|json|csv|parquet)$/i.test(p) && !p.split('/').some((s) => s.startsWith('.'));

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;
const COMMIT = /^[0-9a-f]{40}$/;

function failure(kind: RepoKind, message: string, cause?: unknown): Error {
  return kind === 'model' ? new CheckpointError(message, { cause }) : new DataError(message, { cause });
}

/** Resolves a local path or Hub id of `kind` to a local folder (or file, for a local dataset file). */
export async function resolveRepo(id: string, kind: RepoKind, hub: HubOptions, opts: ResolveOptions = {}): Promise<ResolvedRepo> {
  const key = kind === 'model' ? 'model_id' : 'dataset_id';
  if (existsSync(id)) return { path: resolve(id), source: 'local' };
  if (!HUB_ID.test(id) || id.startsWith('.') || /\.(jsonl|json|csv|parquet)$/i.test(id)) {
    throw failure(kind, `${key} "${id}": no such file or folder, and not a Hugging Face Hub id (owner/name).`);
  }
  const revision = opts.revision ?? 'main';
  const storage = join(hub.cacheDir, `${kind}s--${id.split('/').join('--')}`);
  const cached = cachedSnapshot(storage, revision);
  const where = `${key} "${id}" (revision ${revision})`;
  if (hub.offline) {
    if (cached !== undefined) return { path: cached.path, source: 'cache', repo: id, commit: cached.commit };
    throw failure(kind, `${where}: not in the cache ${storage} and HF_HUB_OFFLINE=1 forbids downloading; download it once online, or point ${key} at a local folder.`);
  }
  if (hub.token !== undefined && !hub.token.startsWith('hf_')) {
    throw new ConfigError(`HF_TOKEN: a Hugging Face access token starts with "hf_"; the one set does not (check the variable or ${join(dirname(hub.cacheDir), 'token')}).`);
  }
  try {
    return await download(id, kind, hub, revision, storage, opts.include ?? (() => true));
  } catch (e) {
    if (e instanceof TrainerError) throw e;
    if (e instanceof HubApiError) {
      if (e.statusCode === 401 || e.statusCode === 403) {
        throw failure(kind, `${where}: the Hub refused access (HTTP ${e.statusCode}); ${hub.token === undefined ? 'set HF_TOKEN to a token that can read it' : 'the token in HF_TOKEN cannot read it (gated repository: accept its terms on the Hub)'}.`, e);
      }
      if (e.statusCode === 404) throw failure(kind, `${where}: not found on ${hub.hubUrl} (check the id and revision).`, e);
    }
    if (cached !== undefined) return { path: cached.path, source: 'cache', repo: id, commit: cached.commit };
    throw failure(kind, `${where}: neither cached in ${storage} nor reachable at ${hub.hubUrl} (${(e as Error).message}); check the network, or set HF_HUB_OFFLINE=1 with the files in the cache.`, e);
  }
}

/** The snapshot a revision points at, when the cache has it (refs/<revision> → snapshots/<commit>). */
function cachedSnapshot(storage: string, revision: string): { path: string; commit: string } | undefined {
  let commit = revision;
  if (!COMMIT.test(revision)) {
    try {
      commit = readFileSync(join(storage, 'refs', revision), 'utf8').trim();
    } catch {
      return undefined;
    }
  }
  const path = join(storage, 'snapshots', commit);
  try {
    if (statSync(path).isDirectory() && readdirSync(path).length > 0) return { path, commit };
  } catch {
    return undefined;
  }
  return undefined;
}

async function download(id: string, kind: RepoKind, hub: HubOptions, revision: string, storage: string, include: (p: string) => boolean): Promise<ResolvedRepo> {
  const creds = { accessToken: hub.token, hubUrl: hub.hubUrl, fetch: hub.fetch };
  const info =
    kind === 'model'
      ? await modelInfo({ ...creds, name: id, revision, additionalFields: ['sha'] })
      : await datasetInfo({ ...creds, name: id, revision, additionalFields: ['sha'] });
  const commit = (info as { sha?: string }).sha;
  if (commit === undefined || !COMMIT.test(commit)) throw new Error(`the Hub returned no commit hash for ${id}@${revision}`);
  if (revision !== commit) {
    mkdirSync(join(storage, 'refs', dirname(revision)), { recursive: true });
    writeFileSync(join(storage, 'refs', revision), commit);
  }
  const snapshot = join(storage, 'snapshots', commit);
  const repo = kind === 'model' ? id : (`datasets/${id}` as const);
  let count = 0;
  for await (const entry of listFiles({ ...creds, repo, recursive: true, revision: commit })) {
    if (entry.type !== 'file' || !include(entry.path)) continue;
    count++;
    if (existsSync(join(snapshot, entry.path))) continue;
    await downloadFileToCacheDir({ ...creds, repo, path: entry.path, revision: commit, cacheDir: hub.cacheDir });
  }
  if (count === 0) throw failure(kind, `${kind === 'model' ? 'model_id' : 'dataset_id'} "${id}": the repository has no ${kind === 'model' ? 'model' : 'data'} files this trainer reads.`);
  return { path: snapshot, source: 'hub', repo: id, commit };
}
