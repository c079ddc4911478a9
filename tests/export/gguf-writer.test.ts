import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExportError } from '../../src/errors.js';
import { chooseTensorType, planQwen3Tensors, qwen3TensorNames } from '../../src/export/gguf-model.js';
import { GGML_TYPES } from '../../src/export/gguf-quants.js';
import { gguf, GgufWriter, tensorBytes, type GgufTensorDecl, type GgufValue } from '../../src/export/gguf-writer.js';
import { parseQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { readQwen3Config } from '../../src/model/config.js';
import { TINY_MODEL } from '../helpers/fixtures.js';

/**
 * The GGUF writer read back by node-llama-cpp's own GGUF parser (an implementation independent of
 * ours), the header bytes checked by hand, the state machine's refusals, and the tensor-type mix.
 */

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'gguf-writer-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const METADATA: [string, GgufValue][] = [
  ['general.architecture', gguf.str('qwen3')],
  ['general.name', gguf.str('tëst ✓')],
  ['test.u8', { type: 'U8', value: 200 }],
  ['test.i8', { type: 'I8', value: -5 }],
  ['test.u16', { type: 'U16', value: 60000 }],
  ['test.i16', { type: 'I16', value: -30000 }],
  ['test.u32', gguf.u32(4_000_000_000)],
  ['test.i32', gguf.i32(-2_000_000_000)],
  ['test.f32', gguf.f32(1e-6)],
  ['test.bool', gguf.bool(true)],
  ['test.u64', { type: 'U64', value: 2n ** 40n }],
  ['test.i64', { type: 'I64', value: -(2n ** 40n) }],
  ['test.f64', { type: 'F64', value: Math.PI }],
  ['test.strs', gguf.strs(['a', '', 'Ġthe', '<|im_end|>'])],
  ['test.i32s', gguf.i32s([1, 3, 4, 5])],
];

const TENSORS: GgufTensorDecl[] = [
  { name: 'a.weight', ne: [3], type: 'F32' },
  { name: 'b.weight', ne: [32, 2], type: 'Q8_0' },
  { name: 'c.weight', ne: [5, 3], type: 'F16' },
];

function bytesOf(t: GgufTensorDecl, seed: number): Uint8Array {
  return Uint8Array.from({ length: tensorBytes(t) }, (_, i) => (i * 31 + seed * 7) & 0xff);
}

describe('GgufWriter', () => {
  it('writes a file that node-llama-cpp parses to the same metadata, tensor infos and data', async () => {
    const path = join(dir, 'all.gguf');
    const w = await GgufWriter.create(path, METADATA, TENSORS);
    for (const [i, t] of TENSORS.entries()) {
      const b = bytesOf(t, i);
      await w.write(t.name, b.subarray(0, 5)); // in pieces
      await w.write(t.name, b.subarray(5));
    }
    await w.finish();
    expect(w.state).toBe('finished');
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const file = readFileSync(path);
    expect(file.readUInt32LE(0)).toBe(0x46554747);
    expect(file.readUInt32LE(4)).toBe(3);
    expect(file.readBigUInt64LE(8)).toBe(3n);
    expect(file.readBigUInt64LE(16)).toBe(BigInt(METADATA.length));

    const info = await readGgufFileInfo(path, { logWarnings: false });
    const md = info.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(md.general.architecture).toBe('qwen3');
    expect(md.general.name).toBe('tëst ✓');
    expect(md.test).toMatchObject({ u8: 200, i8: -5, u16: 60000, i16: -30000, u32: 4_000_000_000, i32: -2_000_000_000, bool: true, strs: ['a', '', 'Ġthe', '<|im_end|>'], i32s: [1, 3, 4, 5] });
    expect(md.test.f32 as number).toBeCloseTo(1e-6, 12);
    expect(BigInt(md.test.u64 as bigint)).toBe(2n ** 40n);
    expect(BigInt(md.test.i64 as bigint)).toBe(-(2n ** 40n));
    expect(md.test.f64).toBe(Math.PI);
    expect(info.tensorInfo!.map((t) => [t.name, t.dimensions.map(Number), t.ggmlType])).toEqual(TENSORS.map((t) => [t.name, [...t.ne], GGML_TYPES[t.type].id]));
    for (const [i, t] of info.tensorInfo!.entries()) {
      const at = Number(t.fileOffset);
      expect(at % 32, `${t.name} aligned`).toBe(0);
      expect(Buffer.compare(file.subarray(at, at + tensorBytes(TENSORS[i])), bytesOf(TENSORS[i], i)), `${t.name} data`).toBe(0);
    }
    expect(file.length).toBe(GgufWriter.plannedBytes(METADATA, TENSORS));
  });

  it('refuses out-of-order, duplicate and oversized writes, an early finish, and calls after finish', async () => {
    const path = join(dir, 'order.gguf');
    const w = await GgufWriter.create(path, METADATA, TENSORS);
    await expect(w.write('b.weight', new Uint8Array(4))).rejects.toThrow(/out of order: tensor "a\.weight" comes first/);
    await expect(w.write('zzz', new Uint8Array(4))).rejects.toThrow(/no such tensor/);
    await expect(w.write('a.weight', new Uint8Array(13))).rejects.toThrow(/13 bytes given but only 12/);
    await w.write('a.weight', new Uint8Array(12));
    await expect(w.write('a.weight', new Uint8Array(1))).rejects.toThrow(/duplicate write/);
    await expect(w.finish()).rejects.toThrow(/before all data was written: tensor "b\.weight"/);
    await w.abort();
    expect(existsSync(path)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('order'))).toEqual([]);
    await expect(w.write('b.weight', new Uint8Array(4))).rejects.toThrow(/refused: the writer is aborted/);
  });

  it('refuses bad declarations: duplicate keys or names, wrong value types, long names, partial blocks', async () => {
    const p = join(dir, 'bad.gguf');
    await expect(GgufWriter.create(p, [...METADATA, ['test.u8', gguf.u32(1)]], TENSORS)).rejects.toThrow(/"test\.u8" is given twice/);
    await expect(GgufWriter.create(p, [['k', gguf.u32(-1)]], [])).rejects.toThrow(/-1 is not a valid U32/);
    await expect(GgufWriter.create(p, [['k', gguf.u32(1.5)]], [])).rejects.toThrow(ExportError);
    await expect(GgufWriter.create(p, [['k', gguf.i32s([1, 2 ** 31])]], [])).rejects.toThrow(/"k"\[1\]/);
    await expect(GgufWriter.create(p, [], [TENSORS[0], TENSORS[0]])).rejects.toThrow(/declared twice/);
    await expect(GgufWriter.create(p, [], [{ name: 'x'.repeat(64), ne: [1], type: 'F32' }])).rejects.toThrow(/longer than 63 bytes/);
    await expect(GgufWriter.create(p, [], [{ name: 'q', ne: [48, 2], type: 'Q8_0' }])).rejects.toThrow(/48 elements cannot be stored as Q8_0/);
    await expect(GgufWriter.create(p, [], [], 64)).rejects.toThrow(/general\.alignment/);
    expect(readdirSync(dir).filter((f) => f.startsWith('bad'))).toEqual([]);
  });

  it('honours general.alignment', async () => {
    const path = join(dir, 'align64.gguf');
    const w = await GgufWriter.create(path, [['general.alignment', gguf.u32(64)]], TENSORS);
    for (const [i, t] of TENSORS.entries()) await w.write(t.name, bytesOf(t, i));
    await w.finish();
    const info = await readGgufFileInfo(path, { logWarnings: false });
    for (const t of info.tensorInfo!) expect(Number(t.fileOffset) % 64).toBe(0);
  });
});

describe('tensor names and the type mix', () => {
  let tiny: Qwen3Config;
  let qwen4b: Qwen3Config;
  beforeAll(async () => {
    tiny = await readQwen3Config(TINY_MODEL);
    qwen4b = parseQwen3Config(
      {
        model_type: 'qwen3', hidden_size: 2560, intermediate_size: 9728, num_hidden_layers: 36, num_attention_heads: 32, num_key_value_heads: 8,
        head_dim: 128, vocab_size: 151936, rope_theta: 5000000, tie_word_embeddings: true, max_position_embeddings: 262144,
      },
      'qwen3-4b config',
    );
  });

  it("llama.cpp's names, no output.weight when tied", () => {
    const names = qwen3TensorNames(tiny).map((t) => t.name);
    expect(names.slice(0, 12)).toEqual([
      'token_embd.weight', 'blk.0.attn_norm.weight', 'blk.0.attn_q.weight', 'blk.0.attn_k.weight', 'blk.0.attn_v.weight', 'blk.0.attn_output.weight',
      'blk.0.attn_q_norm.weight', 'blk.0.attn_k_norm.weight', 'blk.0.ffn_norm.weight', 'blk.0.ffn_gate.weight', 'blk.0.ffn_up.weight', 'blk.0.ffn_down.weight',
    ]);
    expect(names.at(-1)).toBe('output_norm.weight');
    expect(qwen3TensorNames({ ...tiny, tieWordEmbeddings: false }).at(-1)).toEqual({ source: 'lm_head.weight', name: 'output.weight', layer: undefined });
  });

  it('Q4_K_M on Qwen3-4B: Q6_K for the tied embedding and for attn_v / ffn_down of the use_more_bits layers', () => {
    const plan = planQwen3Tensors(qwen4b, 'q4_k_m', (s) => (s.includes('norm') ? [s.includes('q_norm') || s.includes('k_norm') ? 128 : 2560] : s === 'model.embed_tokens.weight' ? [151936, 2560] : projectionShapeOf(s)));
    const typeOf = (n: string) => plan.find((t) => t.name === n)!.type;
    expect(typeOf('token_embd.weight')).toBe('Q6_K');
    expect(typeOf('blk.0.attn_norm.weight')).toBe('F32');
    const more = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35];
    for (let l = 0; l < 36; l++) {
      const want = more.includes(l) ? 'Q6_K' : 'Q4_K';
      expect(typeOf(`blk.${l}.attn_v.weight`), `layer ${l} attn_v`).toBe(want);
      expect(typeOf(`blk.${l}.ffn_down.weight`), `layer ${l} ffn_down`).toBe(want);
      for (const n of ['attn_q', 'attn_k', 'attn_output', 'ffn_gate', 'ffn_up']) expect(typeOf(`blk.${l}.${n}.weight`)).toBe('Q4_K');
    }
    expect(chooseTensorType('q4_k_m', 'output.weight', [2560, 151936], undefined, 36, false)).toBe('Q6_K');
    expect(chooseTensorType('q4_k_m', 'token_embd.weight', [2560, 151936], undefined, 36, false)).toBe('Q4_K');
    expect(chooseTensorType('q4_0', 'token_embd.weight', [2560, 151936], undefined, 36, true)).toBe('Q6_K');
    expect(chooseTensorType('q8_0', 'token_embd.weight', [2560, 151936], undefined, 36, true)).toBe('Q8_0');
    expect(chooseTensorType('bf16', 'blk.0.attn_q.weight', [2560, 4096], 0, 36, true)).toBe('BF16');
  });

  it("rows that are not whole 256-blocks fall back as llama-quantize does (the fixture's 32..96-wide rows)", () => {
    expect(chooseTensorType('q4_k_m', 'token_embd.weight', [32, 151936], undefined, 2, true)).toBe('Q8_0');
    expect(chooseTensorType('q4_k_m', 'blk.0.attn_q.weight', [32, 64], 0, 2, true)).toBe('Q5_0');
    expect(chooseTensorType('q4_k_m', 'blk.0.attn_v.weight', [32, 32], 0, 2, true)).toBe('Q5_0');
    expect(chooseTensorType('q4_k_m', 'blk.1.attn_v.weight', [32, 32], 1, 2, true)).toBe('Q8_0');
    expect(chooseTensorType('q4_k_m', 'blk.1.ffn_down.weight', [96, 32], 1, 2, true)).toBe('Q8_0');
    expect(chooseTensorType('q6_k', 'blk.0.attn_q.weight', [32, 64], 0, 2, true)).toBe('Q8_0');
    expect(chooseTensorType('q4_k_m', 'blk.0.attn_q.weight', [48, 64], 0, 2, true)).toBe('F16');
    expect(chooseTensorType('q8_0', 'blk.0.attn_q.weight', [48, 64], 0, 2, true)).toBe('F16');
  });
});

/** Qwen3-4B projection shapes (Nout, K) by checkpoint name. */
function projectionShapeOf(name: string): number[] {
  const shapes: Record<string, number[]> = {
    q_proj: [4096, 2560], k_proj: [1024, 2560], v_proj: [1024, 2560], o_proj: [2560, 4096], gate_proj: [9728, 2560], up_proj: [9728, 2560], down_proj: [2560, 9728],
  };
  return shapes[/\.(\w+_proj)\.weight$/.exec(name)![1]];
}
