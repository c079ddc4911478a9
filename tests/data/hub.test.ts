import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hubOptionsFromEnv, resolveRepo, MODEL_FILES, TOKENIZER_FILES, DATASET_FILES, type HubOptions } from '../../src/data/hub.js';
import { loadExamples, resolveTokenizer } from '../../src/data/dataset.js';
import { resolveConfig } from '../../src/config/load.js';
import { bundledQwen3TokenizerDir } from '../../src/model/tokenizer.js';
import { CheckpointError, DataError } from '../../src/errors.js';
import { startFakeHub, type FakeHub } from './hub-server.js';

const FIXTURE_MODEL = new URL('../../../shared/fixtures/qwen3-tiny/model', import.meta.url).pathname;
const MODEL_COMMIT = 'a'.repeat(40);
const DATASET_COMMIT = 'b'.repeat(40);
const PRIVATE_COMMIT = 'c'.repeat(40);

function modelFiles(): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const f of readdirSync(FIXTURE_MODEL)) files[f] = readFileSync(join(FIXTURE_MODEL, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) files[f] = readFileSync(join(bundledQwen3TokenizerDir(), f));
  files['pytorch_model.bin'] = Buffer.from('not wanted');
  files['original/consolidated.pth'] = Buffer.from('not wanted');
  return files;
}

const row = (i: number) => JSON.stringify({ instruction: `scene ${i}`, response: `Slow crane over scene number ${i}, lit by a low sun.` });
const datasetFiles = {
  'README.md': Buffer.from('# tiny'),
  'data/train.jsonl': Buffer.from(Array.from({ length: 12 }, (_, i) => row(i)).join('\n')),
  'data/validation.jsonl': Buffer.from([row(100), row(101)].join('\n')),
};

describe('Hub or path', () => {
  let hub: FakeHub;
  let cacheDir: string;
  let opts: HubOptions;
  beforeAll(async () => {
    vi.spyOn(console, 'debug').mockImplementation(() => {}); // @huggingface/hub logs each download
    hub = await startFakeHub([
      { type: 'model', id: 'test-org/tiny-qwen3', commit: MODEL_COMMIT, files: modelFiles() },
      { type: 'dataset', id: 'test-org/prompts', commit: DATASET_COMMIT, files: datasetFiles },
      { type: 'dataset', id: 'test-org/private', commit: PRIVATE_COMMIT, files: datasetFiles, token: 'hf_secret' },
    ]);
    cacheDir = join(mkdtempSync(join(tmpdir(), 'hfhome-')), 'hub');
    opts = { cacheDir, token: undefined, offline: false, hubUrl: hub.url };
  });
  afterAll(async () => {
    await hub.close();
  });

  it('reads HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE and HF_ENDPOINT like huggingface_hub', () => {
    expect(hubOptionsFromEnv({}, '/home/u')).toEqual({ cacheDir: '/home/u/.cache/huggingface/hub', token: undefined, offline: false, hubUrl: 'https://huggingface.co' });
    expect(hubOptionsFromEnv({ HF_HOME: '/h', HF_TOKEN: 'hf_x', HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://mirror/' }, '/home/u')).toEqual({
      cacheDir: '/h/hub',
      token: 'hf_x',
      offline: true,
      hubUrl: 'http://mirror',
    });
    expect(hubOptionsFromEnv({ HF_HOME: '/h', HF_HUB_CACHE: '/c' }).cacheDir).toBe('/c');
  });

  it('uses an existing local path as is and refuses a path that does not exist', async () => {
    expect(await resolveRepo(FIXTURE_MODEL, 'model', opts)).toEqual({ path: FIXTURE_MODEL, source: 'local' });
    await expect(resolveRepo('./no/such/dir', 'model', opts)).rejects.toThrow(CheckpointError);
    await expect(resolveRepo('rows.jsonl', 'dataset', opts)).rejects.toThrow(/no such file or folder, and not a Hugging Face Hub id/);
  });

  it('downloads a model into the standard cache layout (blobs, snapshots/<commit>, refs/main), skipping unneeded files', async () => {
    const r = await resolveRepo('test-org/tiny-qwen3', 'model', opts, { include: MODEL_FILES });
    const storage = join(cacheDir, 'models--test-org--tiny-qwen3');
    expect(r).toEqual({ path: join(storage, 'snapshots', MODEL_COMMIT), source: 'hub', repo: 'test-org/tiny-qwen3', commit: MODEL_COMMIT });
    expect(readFileSync(join(storage, 'refs', 'main'), 'utf8')).toBe(MODEL_COMMIT);
    expect(readdirSync(r.path).sort()).toEqual([
      'config.json', 'generation_config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors',
      'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json',
    ]);
    expect(lstatSync(join(r.path, 'config.json')).isSymbolicLink()).toBe(true);
    expect(readFileSync(join(r.path, 'config.json'))).toEqual(readFileSync(join(FIXTURE_MODEL, 'config.json')));
    expect(readdirSync(join(storage, 'blobs')).length).toBe(7);
  });

  it('reuses cached files without downloading again, and works offline from the cache', async () => {
    hub.requests.length = 0;
    const again = await resolveRepo('test-org/tiny-qwen3', 'model', opts, { include: MODEL_FILES });
    expect(again.source).toBe('hub');
    expect(hub.requests.filter((r) => r.includes('/resolve/'))).toEqual([]);
    hub.requests.length = 0;
    const offline = await resolveRepo('test-org/tiny-qwen3', 'model', { ...opts, offline: true });
    expect(offline).toMatchObject({ source: 'cache', commit: MODEL_COMMIT });
    expect(hub.requests).toEqual([]);
  });

  it('reuses a snapshot another tool (Python huggingface_hub) put in the cache', async () => {
    const home = mkdtempSync(join(tmpdir(), 'hfpy-'));
    const storage = join(home, 'hub', 'datasets--test-org--prompts');
    mkdirSync(join(storage, 'refs'), { recursive: true });
    writeFileSync(join(storage, 'refs', 'main'), DATASET_COMMIT);
    for (const [p, b] of Object.entries(datasetFiles)) {
      mkdirSync(join(storage, 'snapshots', DATASET_COMMIT, p, '..'), { recursive: true });
      writeFileSync(join(storage, 'snapshots', DATASET_COMMIT, p), b);
    }
    hub.requests.length = 0;
    const r = await resolveRepo('test-org/prompts', 'dataset', { ...opts, cacheDir: join(home, 'hub') }, { include: DATASET_FILES });
    expect(r.path).toBe(join(storage, 'snapshots', DATASET_COMMIT));
    expect(hub.requests.filter((x) => x.includes('/resolve/'))).toEqual([]);
  });

  it('loads a Hub dataset with its train and validation splits end to end', async () => {
    const config = resolveConfig({ dataset_id: 'test-org/prompts' }, 'test').config;
    const loaded = await loadExamples(config, opts);
    expect(loaded.dataset.path).toBe(join(cacheDir, 'datasets--test-org--prompts', 'snapshots', DATASET_COMMIT));
    expect(loaded.format).toBe('instruction_response');
    expect(loaded.rowCounts).toEqual({ train: 12, validation: 2 });
    expect(existsSync(join(loaded.dataset.path, 'README.md'))).toBe(false); // data files only
  });

  it('honours HF_TOKEN for a private repository', async () => {
    await expect(resolveRepo('test-org/private', 'dataset', opts)).rejects.toThrow(/refused access \(HTTP 401\); set HF_TOKEN/);
    await expect(resolveRepo('test-org/private', 'dataset', { ...opts, token: 'hf_wrong' })).rejects.toThrow(/the token in HF_TOKEN cannot read it/);
    await expect(resolveRepo('test-org/private', 'dataset', { ...opts, token: 'no-prefix' })).rejects.toThrow(/starts with "hf_"/);
    const r = await resolveRepo('test-org/private', 'dataset', { ...opts, token: 'hf_secret' }, { include: DATASET_FILES });
    expect(readdirSync(join(r.path, 'data')).sort()).toEqual(['train.jsonl', 'validation.jsonl']);
  });

  it('says clearly when a repository is neither cached nor reachable', async () => {
    await expect(resolveRepo('test-org/missing', 'model', opts)).rejects.toThrow(/not found on http:\/\/127\.0\.0\.1/);
    await expect(resolveRepo('test-org/missing', 'model', { ...opts, offline: true })).rejects.toThrow(/not in the cache .*HF_HUB_OFFLINE=1 forbids downloading/);
    const unreachable = { ...opts, hubUrl: 'http://127.0.0.1:9' };
    await expect(resolveRepo('test-org/never-seen', 'dataset', unreachable)).rejects.toThrow(DataError);
    await expect(resolveRepo('test-org/never-seen', 'dataset', unreachable)).rejects.toThrow(/neither cached in .* nor reachable at http:\/\/127\.0\.0\.1:9/);
    // A cached repository is still usable when the Hub cannot be reached.
    expect(await resolveRepo('test-org/tiny-qwen3', 'model', unreachable)).toMatchObject({ source: 'cache', commit: MODEL_COMMIT });
  });

  it('fetches only the tokenizer files for validate and dry-run, falling back to the bundled tokenizer when unreachable', async () => {
    const fresh = { ...opts, cacheDir: join(mkdtempSync(join(tmpdir(), 'hftok-')), 'hub') };
    const config = resolveConfig({ model_id: 'test-org/tiny-qwen3' }, 'test').config;
    const { tokenizer, note } = await resolveTokenizer(config, fresh);
    expect(note).toBeUndefined();
    expect(tokenizer.source).toBe(join(fresh.cacheDir, 'models--test-org--tiny-qwen3', 'snapshots', MODEL_COMMIT, 'tokenizer.json'));
    expect(readdirSync(join(fresh.cacheDir, 'models--test-org--tiny-qwen3', 'snapshots', MODEL_COMMIT)).filter((f) => f.endsWith('.safetensors'))).toEqual([]);
    const fallback = await resolveTokenizer(resolveConfig({ model_id: 'test-org/not-there' }, 'test').config, { ...fresh, offline: true });
    expect(fallback.note).toMatch(/using the bundled Qwen3 tokenizer/);
    expect(TOKENIZER_FILES('model-00001-of-00002.safetensors')).toBe(false);
  });
});
