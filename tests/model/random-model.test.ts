import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../src/errors.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { materializeRandomModel, randomModelDir, randomModelFor, readConfigSource } from '../../src/model/random-model.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * Random-weight model folders (src/model/random-model.ts) at a tiny Qwen3 shape with the real
 * vocabulary: sharded layout, loadable, deterministic, cached, rebuilt when damaged, and a forward
 * pass with a finite loss near ln V (sane scales).
 */
const TINY = {
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  vocab_size: 151936,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  max_position_embeddings: 4096,
  tie_word_embeddings: true,
  initializer_range: 0.02,
  torch_dtype: 'bfloat16',
};

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'random-model-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const digest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('random-weight model folders', () => {
  it('writes bf16 shards with an index, config.json and the Qwen3 tokenizer; reuses the folder on the next call', async () => {
    const out = join(dir, 'tiny');
    // the embedding alone is 9.7 MB: 4 MB shards put it alone in the first shard
    const made = await materializeRandomModel(TINY, out, { seed: 7, shardBytes: 4 * 2 ** 20 });
    expect(made.reused).toBe(false);
    const files = readdirSync(out).sort();
    expect(files).toContain('model.safetensors.index.json');
    expect(files).toEqual(expect.arrayContaining(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'random-model.json']));
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    expect(shards.length).toBeGreaterThan(1);
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.metadata.total_size).toBe(made.weightBytes);
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(shards));
    const ckpt = await Checkpoint.open(out);
    expect(ckpt.info('model.embed_tokens.weight')).toMatchObject({ dtype: 'BF16', shape: [151936, 32] });
    await ckpt.close();
    expect((await QwenTokenizer.load(out)).encode('A fox crosses a frozen lake').length).toBeGreaterThan(3);

    const before = Object.fromEntries(shards.map((f) => [f, digest(join(out, f))]));
    const again = await materializeRandomModel(TINY, out, { seed: 7, shardBytes: 4 * 2 ** 20 });
    expect(again.reused).toBe(true);
    // damaged (a shard cut short): rebuilt, with the same bytes as before (deterministic)
    truncateSync(join(out, shards[1]), 100);
    const rebuilt = await materializeRandomModel(TINY, out, { seed: 7, shardBytes: 4 * 2 ** 20 });
    expect(rebuilt.reused).toBe(false);
    for (const f of shards) expect(digest(join(out, f)), f).toBe(before[f]);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('gives other bytes for another seed, and its own folder name per recipe', async () => {
    const a = randomModelDir(dir, 'tiny', TINY, { seed: 1 });
    const b = randomModelDir(dir, 'tiny', TINY, { seed: 2 });
    expect(a).not.toBe(b);
    expect(randomModelDir(dir, 'tiny', TINY, { seed: 1 })).toBe(a);
    await materializeRandomModel(TINY, join(dir, 's1'), { seed: 1 });
    await materializeRandomModel(TINY, join(dir, 's2'), { seed: 2 });
    expect(digest(join(dir, 's1', 'model.safetensors'))).not.toBe(digest(join(dir, 's2', 'model.safetensors')));
  });

  it('model_id as a config.json or a folder holding one; a clear error otherwise', async () => {
    const cfgDir = join(dir, 'cfg');
    mkdirSync(cfgDir);
    writeFileSync(join(cfgDir, 'tiny-model.json'), JSON.stringify(TINY));
    writeFileSync(join(cfgDir, 'config.json'), JSON.stringify(TINY));
    expect((await readConfigSource(join(cfgDir, 'tiny-model.json'))).name).toBe('tiny-model');
    expect((await readConfigSource(cfgDir)).name).toBe('cfg');
    const made = await randomModelFor(join(cfgDir, 'tiny-model.json'), join(dir, 'root'));
    expect(made.dir).toMatch(/root[\\/]tiny-model-random-[0-9a-f]{8}$/);
    await expect(readConfigSource(join(dir, 'nope.json'))).rejects.toThrow(CheckpointError);
    await expect(readConfigSource(join(dir, 'nope.json'))).rejects.toThrow(/give a config.json \(e\.g\. configs\/models\/qwen3-4b\.json\) or a folder holding one/);
  });

  it('loads as NF4 and its first loss is finite and near ln V (initializer_range scales)', async () => {
    const gpu = await testGpu();
    const out = join(dir, 'tiny');
    const model = await Qwen3Model.load(gpu, out, { base: 'nf4' });
    const B = 2;
    const T = 16;
    const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % 151643);
    const r = await model.forward({ B, T, inputIds: ids, labels: ids });
    expect(Number.isFinite(r.loss)).toBe(true);
    // ln 151936 = 11.93; logits of std 0.02·√32 barely move it
    expect(Math.abs(r.loss - Math.log(151936))).toBeLessThan(0.5);
  });
});
