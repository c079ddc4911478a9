import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHfFolder } from '../../src/export/hf-folder.js';
import { MergedWeights } from '../../src/export/merge.js';
import { readPeftAdapter, type HostLoraAdapter } from '../../src/model/peft.js';
import { sanitizeTokenizerConfig, tokenizerSourceDir } from '../../src/export/tokenizer-files.js';
import { bf16BitsToF32, f32ToBf16Bits } from '../../src/model/bf16.js';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { readQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';

/**
 * The merge W' = W + (alpha/r)·B·A against PEFT's merge_and_unload (fixture `merged.*`, f32), and
 * the merged Hugging Face folder.
 *
 * bf16 rounding rule: the merged folder stores round-to-nearest-even(bf16) of the f32 merged value,
 * as torch's `.to(torch.bfloat16)` does after PEFT's f32 merge. Our f32 value (float64 sum, rounded
 * once) can differ from torch's f32 (its own summation order) by an ulp, which changes the bf16
 * value only when the f32 value lies within an ulp of a bf16 rounding midpoint; such elements are
 * the only ones allowed to differ, and there are none in the fixture.
 */

const Q = 'model.layers.0.self_attn.q_proj.weight';
const DOWN = 'model.layers.0.mlp.down_proj.weight';

/** Elements whose bf16 rounding differs, excluding those within 2 f32 ulps of a bf16 midpoint. */
function bf16Mismatches(ours: Float32Array, ref: Float32Array): { hard: number; nearTie: number } {
  let hard = 0;
  let nearTie = 0;
  const u = new Uint32Array(1);
  const f = new Float32Array(u.buffer);
  for (let i = 0; i < ours.length; i++) {
    if (f32ToBf16Bits(ours[i]) === f32ToBf16Bits(ref[i])) continue;
    f[0] = ref[i];
    const low = u[0] & 0xffff;
    if (Math.abs(low - 0x8000) <= 2) nearTie++;
    else hard++;
  }
  return { hard, nearTie };
}

describe('merge', () => {
  let dir: string;
  let config: Qwen3Config;
  let adapter: HostLoraAdapter;
  let ref: Awaited<ReturnType<typeof readReference>>;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'merge-'));
    config = await readQwen3Config(TINY_MODEL);
    adapter = await readPeftAdapter(TINY_ADAPTER, config);
    ref = await readReference();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("layer 0's merged q_proj and down_proj equal PEFT's merge_and_unload", async () => {
    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    try {
      for (const [name, key] of [[Q, 'merged.layers.0.self_attn.q_proj.weight'], [DOWN, 'merged.layers.0.mlp.down_proj.weight']]) {
        const ours = await merged.read(name);
        const theirs = ref.get(key)!.data;
        // f32 vs torch's f32 summation order: an ulp or two.
        expectRelNorm(key, ours, theirs, 1e-6);
        expect(bf16Mismatches(ours, theirs), key).toEqual({ hard: 0, nearTie: 0 });
      }
    } finally {
      await merged.close();
    }
  });

  it('chunked streaming gives the same values as one chunk; unmerged tensors pass through unchanged', async () => {
    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    const base = await Checkpoint.open(TINY_MODEL);
    try {
      const whole = await merged.read(DOWN);
      const pieces = new Float32Array(whole.length);
      let chunks = 0;
      for await (const c of merged.chunks(DOWN, 100)) {
        pieces.set(c.values, c.row0 * 96);
        chunks++;
      }
      expect(chunks).toBe(32);
      expect(pieces).toEqual(whole);
      for (const name of ['model.embed_tokens.weight', 'model.norm.weight', 'model.layers.1.self_attn.k_norm.weight']) {
        // Byte comparison: vitest's deep equality is slow on the 4.8M-value embedding.
        const [a, b] = [await merged.read(name), await base.readF32(name)];
        expect(Buffer.compare(new Uint8Array(a.buffer), new Uint8Array(b.buffer)), name).toBe(0);
      }
    } finally {
      await merged.close();
      await base.close();
    }
  });

  it('NF4 base: the round trip the adapter was trained on (fixture nf4.dequant), with and without the adapter', async () => {
    const nf4 = await MergedWeights.open(TINY_MODEL, undefined, { base: 'nf4' });
    const nf4Merged = await MergedWeights.open(TINY_MODEL, adapter, { base: 'nf4' });
    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    const base = await Checkpoint.open(TINY_MODEL);
    try {
      const deq = await nf4.read(DOWN);
      expect(deq).toEqual(ref.get('nf4.dequant')!.data);
      // Chunks of whole 64-value blocks: 100 values → 2 rows of 96 = 3 blocks.
      const pieces = new Float32Array(deq.length);
      for await (const c of nf4.chunks(DOWN, 100)) pieces.set(c.values, c.row0 * 96);
      expect(pieces).toEqual(deq);
      // nf4 + adapter = nf4 + (merged − original), up to f32 rounding.
      const w = await base.readF32(DOWN);
      const m = await merged.read(DOWN);
      const expected = deq.map((v, i) => v + (m[i] - w[i]));
      expectRelNorm('nf4 + delta', await nf4Merged.read(DOWN), expected, 1e-6);
      // Double-quantised scales change the values a little (8-bit absmax).
      const dq = await MergedWeights.open(TINY_MODEL, undefined, { base: 'nf4', doubleQuant: true });
      try {
        const d = await dq.read(DOWN);
        expect(d).not.toEqual(deq);
        expectRelNorm('double-quantised nf4', d, deq, 2e-2);
      } finally {
        await dq.close();
      }
    } finally {
      await Promise.all([nf4.close(), nf4Merged.close(), merged.close(), base.close()]);
    }
  });

  it('merged folder: same shards, index, config, tokenizer; reloads as a checkpoint and a tokenizer', async () => {
    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    const out = join(dir, 'merged');
    try {
      await writeHfFolder(out, merged, { tokenizerDir: tokenizerSourceDir(TINY_MODEL) });
    } finally {
      await merged.close();
    }
    expect(readdirSync(out).sort()).toEqual([
      'config.json',
      'generation_config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8'));
    const srcIndex = JSON.parse(readFileSync(join(TINY_MODEL, 'model.safetensors.index.json'), 'utf8'));
    expect(index.weight_map).toEqual(srcIndex.weight_map);
    expect(index.metadata.total_size).toBe(srcIndex.metadata.total_size);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'))).toEqual(JSON.parse(readFileSync(join(TINY_MODEL, 'config.json'), 'utf8')));

    const ckpt = await Checkpoint.open(out);
    const src = await Checkpoint.open(TINY_MODEL);
    try {
      expect(ckpt.info(Q).dtype).toBe('BF16');
      const q = await ckpt.readF32(Q);
      const theirs = ref.get('merged.layers.0.self_attn.q_proj.weight')!.data;
      expect(q).toEqual(theirs.map((v) => bf16BitsToF32(f32ToBf16Bits(v))));
      expect(Buffer.compare(await ckpt.readBytes('model.embed_tokens.weight'), await src.readBytes('model.embed_tokens.weight'))).toBe(0);
    } finally {
      await ckpt.close();
      await src.close();
    }
    const tok = await QwenTokenizer.load(out);
    expect(tok.encode('<|im_start|>user\nhi<|im_end|>')).toEqual([151644, 872, 198, 6023, 151645]);
  });

  it('f32 folder dtype keeps the merged f32 values; an existing folder is refused', async () => {
    const merged = await MergedWeights.open(TINY_MODEL, adapter);
    const out = join(dir, 'merged-f32');
    try {
      await writeHfFolder(out, merged, { tokenizerDir: tokenizerSourceDir(TINY_MODEL), dtype: 'f32' });
      const ckpt = await Checkpoint.open(out);
      expect(await ckpt.readF32(DOWN)).toEqual(await merged.read(DOWN));
      await ckpt.close();
      expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).dtype).toBe('float32');
      await expect(writeHfFolder(out, merged, { tokenizerDir: tokenizerSourceDir(TINY_MODEL) })).rejects.toThrow(/already exists/);
      expect(readdirSync(dir).filter((f) => f.includes('.tmp-') || f.includes('.old-'))).toEqual([]);
    } finally {
      await merged.close();
    }
  });

  it("tokenizer_config.json loses a list-valued extra_special_tokens (the seed's reload bug) and keeps the rest", async () => {
    const text = JSON.stringify({ eos_token: '<|im_end|>', extra_special_tokens: ['<|im_start|>', '<|im_end|>'], model_max_length: 131072 });
    const cleaned = JSON.parse(sanitizeTokenizerConfig(text, 'test'));
    expect(cleaned).toEqual({ eos_token: '<|im_end|>', model_max_length: 131072 });
    const dict = JSON.stringify({ extra_special_tokens: { image_token: '<|image_pad|>' } });
    expect(sanitizeTokenizerConfig(dict, 'test')).toBe(dict);

    // A model folder with its own tokenizer files: they are copied, the config sanitised.
    const model = join(dir, 'model-with-tokenizer');
    mkdirSync(model);
    for (const f of readdirSync(TINY_MODEL)) copyFileSync(join(TINY_MODEL, f), join(model, f));
    const bundled = tokenizerSourceDir(TINY_MODEL);
    copyFileSync(join(bundled, 'tokenizer.json'), join(model, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(bundled, 'tokenizer_config.json'), 'utf8'));
    writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify({ ...cfg, extra_special_tokens: ['<|im_start|>'] }));
    writeFileSync(join(model, 'chat_template.jinja'), cfg.chat_template);
    expect(tokenizerSourceDir(model)).toBe(model);
    const merged = await MergedWeights.open(model, adapter);
    const out = join(dir, 'merged-own-tokenizer');
    try {
      const files = await writeHfFolder(out, merged, { tokenizerDir: tokenizerSourceDir(model) });
      expect(files).toContain('chat_template.jinja');
    } finally {
      await merged.close();
    }
    expect(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')).extra_special_tokens).toBeUndefined();
    await QwenTokenizer.load(out);
  });
});
