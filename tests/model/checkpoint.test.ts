import { cpSync, mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, ShapeError, TrainerError } from '../../src/errors.js';
import { bf16ToF32Array } from '../../src/model/bf16.js';
import {
  Checkpoint,
  expectedQwen3Shapes,
  PROJECTION_MODULES,
  PROJECTIONS,
  projectionPath,
  projectionShape,
} from '../../src/model/checkpoint.js';
import { parseQwen3Config } from '../../src/model/config.js';
import type { SafetensorsDtype } from '../../src/model/safetensors.js';
import { SafetensorsWriter } from '../../src/model/safetensors-writer.js';

const FIXTURE_MODEL = join(import.meta.dirname, '../../../shared/fixtures/qwen3-tiny/model');
const tmp = mkdtempSync(join(tmpdir(), 'checkpoint-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A tiny Qwen3 config: D=8, F=12, L=1, H=2, Hkv=1, Dh=4, V=10. */
const TINY = {
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 4,
  vocab_size: 10,
  rms_norm_eps: 1e-6,
  rope_theta: 1e6,
  tie_word_embeddings: true,
};

interface TinyOptions {
  config?: Record<string, unknown>;
  drop?: string;
  shapes?: Record<string, number[]>;
  dtypes?: Record<string, SafetensorsDtype>;
  /** Split tensors over two shards with an index instead of one model.safetensors. */
  sharded?: boolean;
}

let dirNo = 0;
/** Writes a checkpoint folder whose tensors follow expectedQwen3Shapes, with deliberate defects. */
async function writeTiny(opts: TinyOptions = {}): Promise<string> {
  const dir = join(tmp, `tiny${dirNo++}`);
  mkdirSync(dir);
  const configJson = { ...TINY, ...opts.config };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(configJson));
  const entries = [...expectedQwen3Shapes(parseQwen3Config(configJson, 'config.json'))]
    .filter(([name]) => name !== opts.drop)
    .map(([name, shape]) => ({ name, dtype: opts.dtypes?.[name] ?? ('BF16' as SafetensorsDtype), shape: opts.shapes?.[name] ?? [...shape] }));
  const files = opts.sharded ? [entries.slice(0, 3), entries.slice(3)] : [entries];
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < files.length; i++) {
    const file = opts.sharded ? `model-0000${i + 1}-of-00002.safetensors` : 'model.safetensors';
    const w = await SafetensorsWriter.create(join(dir, file), files[i], { format: 'pt' });
    for (const e of files[i]) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      const bytes = new Uint8Array(n * (e.dtype === 'BF16' ? 2 : 4));
      bytes.fill(0x3f);
      await w.write(e.name, bytes);
      weightMap[e.name] = file;
    }
    await w.finish();
  }
  if (opts.sharded) writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}

/** The error Checkpoint.open throws, checked to be of class `kind`. */
async function openError(dir: string, kind: typeof TrainerError = CheckpointError): Promise<Error> {
  const err = await Checkpoint.open(dir).then(
    async (c) => {
      await c.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(kind);
  return err as Error;
}

describe('projections and expected shapes', () => {
  it('give Qwen3-4B shapes', () => {
    const c = parseQwen3Config(
      { ...TINY, hidden_size: 2560, intermediate_size: 9728, num_hidden_layers: 36, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 128, vocab_size: 151936 },
      'config.json',
    );
    expect(PROJECTIONS).toEqual(['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    expect(PROJECTIONS.map((p) => projectionShape(c, p))).toEqual([
      [4096, 2560],
      [1024, 2560],
      [1024, 2560],
      [2560, 4096],
      [9728, 2560],
      [9728, 2560],
      [2560, 9728],
    ]);
    expect(projectionPath(5, 'down_proj')).toBe('model.layers.5.mlp.down_proj');
    expect(PROJECTION_MODULES.o_proj).toBe('self_attn');
    const shapes = expectedQwen3Shapes(c);
    expect(shapes.size).toBe(1 + 36 * 11 + 1);
    expect(shapes.get('model.layers.35.self_attn.k_norm.weight')).toEqual([128]);
    expect(shapes.has('lm_head.weight')).toBe(false);
    expect(expectedQwen3Shapes({ ...c, tieWordEmbeddings: false }).get('lm_head.weight')).toEqual([151936, 2560]);
  });
});

describe('the qwen3-tiny fixture checkpoint', () => {
  it('opens via its index with every tensor of both shards matching config.json', async () => {
    const ck = await Checkpoint.open(FIXTURE_MODEL);
    try {
      const expected = expectedQwen3Shapes(ck.config);
      expect(ck.names()).toEqual([...expected.keys()].sort());
      for (const [name, shape] of expected) {
        const info = ck.info(name);
        expect(info.shape, name).toEqual(shape);
        expect(info.dtype).toBe('BF16');
        expect(info.path).toBe(join(FIXTURE_MODEL, name === 'model.embed_tokens.weight' ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'));
      }
      expect(() => ck.info('lm_head.weight')).toThrow(CheckpointError);
    } finally {
      await ck.close();
    }
  });

  it('readF32 of a BF16 tensor is bf16 → f32 of the raw words, and small chunks reassemble', async () => {
    const ck = await Checkpoint.open(FIXTURE_MODEL);
    try {
      const name = 'model.layers.1.self_attn.q_proj.weight';
      const raw = await ck.readBytes(name);
      expect(raw.byteLength).toBe(64 * 32 * 2);
      const f = await ck.readF32(name);
      expect(f).toEqual(bf16ToF32Array(new Uint16Array(raw.buffer)));
      expect(f.some((v) => v !== 0)).toBe(true);

      // the 9.7 MB embedding streamed in 1 MiB chunks through one buffer
      const embed = 'model.embed_tokens.weight';
      const whole = await ck.readBytes(embed);
      const into = new Uint8Array(1 << 20);
      const out = new Uint8Array(whole.byteLength);
      let chunks = 0;
      for await (const c of ck.readChunks(embed, 1 << 20, into)) {
        expect(c.bytes.buffer).toBe(into.buffer);
        out.set(c.bytes, c.offset);
        chunks++;
      }
      expect(chunks).toBe(Math.ceil(whole.byteLength / (1 << 20)));
      // Buffer.equals: vitest's deep equality walks a 9.7 MB array element by element (minutes)
      expect(Buffer.from(out.buffer).equals(Buffer.from(whole.buffer))).toBe(true);
    } finally {
      await ck.close();
    }
  });

  it('a missing shard file is an error naming the index and the shard', async () => {
    const dir = join(tmp, 'fixture-missing-shard');
    cpSync(FIXTURE_MODEL, dir, { recursive: true });
    unlinkSync(join(dir, 'model-00002-of-00002.safetensors'));
    const err = await openError(dir);
    expect(err.message).toContain(join(dir, 'model.safetensors.index.json'));
    expect(err.message).toContain('shard "model-00002-of-00002.safetensors" is listed in weight_map but');
  });
});

describe('Checkpoint.open cross-checks', () => {
  it('opens a single-file checkpoint and a sharded one', async () => {
    for (const sharded of [false, true]) {
      const ck = await Checkpoint.open(await writeTiny({ sharded }));
      expect(ck.names().length).toBe(1 + 11 + 1);
      expect(ck.info('model.layers.0.self_attn.q_proj.weight').shape).toEqual([8, 8]);
      await ck.close();
    }
  });

  it('a tensor named in the index but missing from its shard', async () => {
    const dir = await writeTiny({ sharded: true });
    const index = join(dir, 'model.safetensors.index.json');
    writeFileSync(
      index,
      JSON.stringify({ weight_map: { 'model.extra.weight': 'model-00001-of-00002.safetensors', 'model.norm.weight': 'model-00002-of-00002.safetensors' } }),
    );
    const err = await openError(dir);
    expect(err.message).toContain(join(dir, 'model-00001-of-00002.safetensors'));
    expect(err.message).toContain('tensor "model.extra.weight" is missing, though');
  });

  it('refuses an index pointing outside the folder', async () => {
    const dir = await writeTiny({ sharded: true });
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': '../x.safetensors' } }));
    expect((await openError(dir)).message).toContain('expected the file name of a shard in the same folder');
  });

  it('a missing tensor names it and says the checkpoint and config.json disagree', async () => {
    const err = await openError(await writeTiny({ drop: 'model.layers.0.mlp.up_proj.weight' }));
    expect(err.message).toContain('tensor "model.layers.0.mlp.up_proj.weight" is missing');
    expect(err.message).toContain('expected shape [12, 8]');
    expect(err.message).toContain('the checkpoint and config.json disagree');
  });

  it('an untied config needs lm_head.weight', async () => {
    const dir = await writeTiny({ config: { tie_word_embeddings: false }, drop: 'lm_head.weight' });
    expect((await openError(dir)).message).toContain('"lm_head.weight" is missing (config.json has tie_word_embeddings false');
    const ok = await Checkpoint.open(await writeTiny({ config: { tie_word_embeddings: false } }));
    expect(ok.info('lm_head.weight').shape).toEqual([10, 8]);
    await ok.close();
  });

  it('a wrong shape is a ShapeError with found vs expected', async () => {
    const err = await openError(await writeTiny({ shapes: { 'model.layers.0.self_attn.k_proj.weight': [8, 8] } }), ShapeError);
    expect(err.message).toContain('tensor "model.layers.0.self_attn.k_proj.weight" has shape [8, 8] but config.json implies [4, 8]');
    expect(err.message).toContain('the checkpoint and config.json disagree');
    expect(err.message).toContain('model.safetensors');
  });

  it('weights must be BF16, F16 or F32', async () => {
    const err = await openError(await writeTiny({ dtypes: { 'model.norm.weight': 'I32' } }));
    expect(err.message).toContain('tensor "model.norm.weight" is I32; the model weights must be BF16, F16, F32');
  });

  it('a folder without weights or without config.json', async () => {
    const dir = await writeTiny();
    unlinkSync(join(dir, 'model.safetensors'));
    writeFileSync(join(dir, 'pytorch_model.bin'), '');
    expect((await openError(dir)).message).toContain('no model.safetensors or model.safetensors.index.json found (pytorch_model.bin is not supported');
    unlinkSync(join(dir, 'config.json'));
    expect((await openError(dir)).message).toContain('config.json: cannot read');
  });
});
