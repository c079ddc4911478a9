import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, ExportError } from '../../src/errors.js';
import { bf16ToF32Array, f32ToBf16Array } from '../../src/model/bf16.js';
import { SafetensorsFile, type TensorChunk } from '../../src/model/safetensors.js';
import { SafetensorsWriter } from '../../src/model/safetensors-writer.js';
import { Rng } from '../helpers/random.js';

const FIXTURES = join(import.meta.dirname, '../../../shared/fixtures/qwen3-tiny');
const tmp = mkdtempSync(join(tmpdir(), 'safetensors-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let fileNo = 0;
function tmpPath(): string {
  return join(tmp, `f${fileNo++}.safetensors`);
}

/** A raw safetensors file: u64 header length (or `headerLen` to lie about it), header text, data. */
function writeRaw(header: unknown, data: Uint8Array = new Uint8Array(0), headerLen?: bigint): string {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  const path = tmpPath();
  writeFileSync(path, out);
  return path;
}

async function collect(chunks: AsyncIterable<TensorChunk>): Promise<{ bytes: Uint8Array; count: number; buffers: Set<ArrayBufferLike> }> {
  const parts: Uint8Array[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let expectOffset = 0;
  for await (const c of chunks) {
    expect(c.offset).toBe(expectOffset);
    expectOffset += c.bytes.byteLength;
    buffers.add(c.bytes.buffer);
    parts.push(c.bytes.slice());
  }
  const bytes = new Uint8Array(expectOffset);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  return { bytes, count: parts.length, buffers };
}

async function expectOpenError(path: string, ...fragments: string[]): Promise<void> {
  const err = await SafetensorsFile.open(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CheckpointError);
  const msg = (err as Error).message;
  expect(msg).toContain(path);
  for (const f of fragments) expect(msg).toContain(f);
}

describe('safetensors writer → reader round trip', () => {
  const rng = new Rng(7);
  const w = f32ToBf16Array(rng.f32(5 * 7));
  const x = rng.f32(13);
  const ids = Int32Array.from({ length: 6 }, (_, i) => i * 1000 - 7);
  const half = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0x0000]); // 1, -2, 2^-24, 65504, inf, 0
  const flags = new Uint8Array([1, 0, 1]);

  it('writes the declared tensors in order with contiguous offsets and reads them back', async () => {
    const path = tmpPath();
    const writer = await SafetensorsWriter.create(
      path,
      [
        { name: 'w', dtype: 'BF16', shape: [5, 7] },
        { name: 'empty', dtype: 'F32', shape: [0, 3] },
        { name: 'x', dtype: 'F32', shape: [13] },
        { name: 'ids', dtype: 'I32', shape: [2, 3] },
        { name: 'half', dtype: 'F16', shape: [6] },
        { name: 'flags', dtype: 'BOOL', shape: [3] },
      ],
      { format: 'pt' },
    );
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(true);
    // w in three pieces, splitting an element is allowed: the writer only counts bytes
    const wb = new Uint8Array(w.buffer);
    await writer.write('w', wb.subarray(0, 11));
    await writer.write('w', wb.subarray(11, 40));
    await writer.write('w', wb.subarray(40));
    await writer.write('x', x);
    await writer.write('ids', ids);
    await writer.write('half', half);
    await writer.write('flags', flags);
    expect(existsSync(path)).toBe(false);
    await writer.finish();
    expect(writer.state).toBe('finished');
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);

    const raw = readFileSync(path);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    const headerText = raw.subarray(8, 8 + n).toString('utf8');
    expect(headerText.trimEnd().length).toBeGreaterThan(n - 8); // padded with at most 7 spaces
    expect(Object.keys(JSON.parse(headerText))).toEqual(['__metadata__', 'w', 'empty', 'x', 'ids', 'half', 'flags']);

    const f = await SafetensorsFile.open(path);
    try {
      expect(f.metadata).toEqual({ format: 'pt' });
      expect([...f.tensors.keys()]).toEqual(['w', 'empty', 'x', 'ids', 'half', 'flags']);
      const wi = f.info('w');
      expect(wi).toMatchObject({ dtype: 'BF16', shape: [5, 7], byteOffset: 8 + n, byteLength: 70 });
      expect(f.info('x')).toMatchObject({ byteOffset: 8 + n + 70, byteLength: 52 });
      expect(await f.readBytes('w')).toEqual(wb);
      expect(await f.readF32('w')).toEqual(bf16ToF32Array(w));
      expect(await f.readF32('x')).toEqual(x);
      expect(await f.readF32('empty')).toEqual(new Float32Array(0));
      expect(new Int32Array((await f.readBytes('ids')).buffer)).toEqual(ids);
      expect(Array.from(await f.readF32('half'))).toEqual([1, -2, 2 ** -24, 65504, Infinity, 0]);
      expect(await f.readBytes('flags')).toEqual(flags);
      await expect(f.readF32('ids')).rejects.toThrow(/is I32; only BF16\/F16\/F32 convert/);
      await expect(f.readBytes('nope')).rejects.toThrow(CheckpointError);
    } finally {
      await f.close();
    }
    await expect(f.readBytes('w')).rejects.toThrow(/closed/);
  });

  it('streams a tensor in small chunks through one reusable buffer', async () => {
    const path = tmpPath();
    const big = f32ToBf16Array(rng.f32(1001)); // 2002 bytes: not a multiple of the chunk
    const writer = await SafetensorsWriter.create(path, [{ name: 'big', dtype: 'BF16', shape: [7, 143] }]);
    await writer.write('big', big);
    await writer.finish();
    const f = await SafetensorsFile.open(path);
    try {
      const whole = await f.readBytes('big');
      const a = await collect(f.readChunks('big', 64));
      expect(a.bytes).toEqual(whole);
      expect(a.count).toBe(Math.ceil(2002 / 64));
      expect(a.buffers.size).toBe(1);
      const into = new Uint8Array(300);
      const b = await collect(f.readChunks('big', 250, into));
      expect(b.bytes).toEqual(whole);
      expect([...b.buffers]).toEqual([into.buffer]);
      const c = await collect(f.readChunks('big'));
      expect(c.count).toBe(1);
      expect(c.bytes).toEqual(whole);
      await expect(collect(f.readChunks('big', 63))).rejects.toThrow(/multiple of the BF16 element size 2/);
      await expect(collect(f.readChunks('big', 400, into))).rejects.toThrow(/reusable buffer has 300 bytes/);
    } finally {
      await f.close();
    }
  });
});

describe('safetensors writer state machine', () => {
  const decl = [
    { name: 'a', dtype: 'F32', shape: [2] },
    { name: 'b', dtype: 'U8', shape: [3] },
  ] as const;

  it('refuses duplicate declarations and bad shapes', async () => {
    const path = tmpPath();
    await expect(SafetensorsWriter.create(path, [decl[0], decl[0]])).rejects.toThrow(/"a" is declared twice/);
    await expect(SafetensorsWriter.create(path, [{ name: 'c', dtype: 'F32', shape: [1.5] }])).rejects.toThrow(ExportError);
    await expect(SafetensorsWriter.create(path, [{ name: 'c', dtype: 'Q4' as 'F32', shape: [1] }])).rejects.toThrow(/unknown dtype Q4/);
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);
  });

  it('refuses out-of-order, duplicate, oversized and late writes', async () => {
    const path = tmpPath();
    const w = await SafetensorsWriter.create(path, decl);
    await expect(w.write('b', new Uint8Array(3))).rejects.toThrow(/out of order: tensor "a" comes first and has 8 bytes still to write/);
    await expect(w.write('zz', new Uint8Array(3))).rejects.toThrow(/no such tensor/);
    await expect(w.write('a', new Float32Array(3))).rejects.toThrow(/12 bytes given but only 8 of its 8 bytes remain/);
    await w.write('a', new Float32Array(1));
    await expect(w.finish()).rejects.toThrow(/tensor "a" has 4 of 8 bytes \(2 tensors, 7 bytes missing\)/);
    await w.write('a', new Float32Array(1));
    await expect(w.write('a', new Float32Array(1))).rejects.toThrow(/already complete \(duplicate write\)/);
    await w.write('b', new Uint8Array([1, 2, 3]));
    await w.finish();
    await expect(w.write('b', new Uint8Array(1))).rejects.toThrow(/refused: the writer is finished/);
    await expect(w.finish()).rejects.toThrow(/refused: the writer is finished/);
    await w.abort(); // no-op once finished: the file stays
    expect(existsSync(path)).toBe(true);
    const f = await SafetensorsFile.open(path);
    expect(await f.readBytes('b')).toEqual(new Uint8Array([1, 2, 3]));
    await f.close();
  });

  it('abort removes the temporary file and leaves no output', async () => {
    const path = tmpPath();
    const w = await SafetensorsWriter.create(path, decl);
    await w.write('a', new Float32Array(2));
    await w.abort();
    expect(w.state).toBe('aborted');
    expect(existsSync(`${path}.tmp-${process.pid}`)).toBe(false);
    expect(existsSync(path)).toBe(false);
    await expect(w.write('b', new Uint8Array(3))).rejects.toThrow(/the writer is aborted/);
    await w.abort();
  });

  it('writes an empty file as a valid header', async () => {
    const path = tmpPath();
    const w = await SafetensorsWriter.create(path, []);
    await w.finish();
    const f = await SafetensorsFile.open(path);
    expect(f.tensors.size).toBe(0);
    await f.close();
  });
});

describe('safetensors reader refuses corrupt files, naming the file and tensor', () => {
  const ok = { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const data8 = new Uint8Array(8);

  it('accepts the well-formed baseline', async () => {
    const f = await SafetensorsFile.open(writeRaw(ok, data8));
    expect(f.info('t').byteLength).toBe(8);
    await f.close();
  });

  it('file too short, header length beyond the file, absurd header length', async () => {
    const short = tmpPath();
    writeFileSync(short, new Uint8Array(5));
    await expectOpenError(short, 'too short');
    await expectOpenError(writeRaw(ok, data8, 1000n), 'header length 1000 bytes runs beyond the file size');
    await expectOpenError(writeRaw(ok, data8, 1n << 40n), 'absurd');
  });

  it('invalid JSON, non-object header, bad metadata', async () => {
    await expectOpenError(writeRaw('{"t": {"dtype": "F32",', data8), 'not valid UTF-8 JSON');
    await expectOpenError(writeRaw('[1, 2]', data8), 'must be a JSON object');
    await expectOpenError(writeRaw({ ...ok, __metadata__: { format: 1 } }, data8), '"__metadata__"."format" must be a string');
    await expectOpenError(writeRaw({ t: 5 }), 'tensor "t"', 'entry must be an object');
  });

  it('unknown dtype', async () => {
    await expectOpenError(writeRaw({ t: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)), 'tensor "t"', 'unknown dtype "F8_E4M3"');
  });

  it('non-integer, negative or missing shapes and offsets', async () => {
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: [1.5, 2], data_offsets: [0, 8] } }, data8), 'tensor "t"', 'shape must be an array of non-negative integers');
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, data8), 'tensor "t"', 'shape');
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, data8), 'tensor "t"', 'shape');
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: [2] } }, data8), 'tensor "t"', 'data_offsets must be [begin, end]');
  });

  it('shape·itemsize differs from end − begin', async () => {
    await expectOpenError(writeRaw({ t: { dtype: 'BF16', shape: [3], data_offsets: [0, 8] } }, data8), 'tensor "t"', 'needs 6 bytes but data_offsets [0, 8] hold 8');
  });

  it('offsets out of the file, out of order, overlapping, with gaps or trailing bytes', async () => {
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data8), 'tensor "t"', 'beyond the data section of 8 bytes');
    await expectOpenError(writeRaw({ t: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data8), 'tensor "t"', 'out of order');
    const two = (b: [number, number]) => ({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: b } });
    await expectOpenError(writeRaw(two([4, 12]), new Uint8Array(12)), 'tensor "b"', 'overlaps tensor "a"');
    await expectOpenError(writeRaw(two([12, 20]), new Uint8Array(20)), 'tensor "b" starts at 12', 'a gap of 4 bytes');
    await expectOpenError(writeRaw(ok, new Uint8Array(12)), '4 trailing bytes belong to no tensor');
    // header keys need not be in data order: b's data first is fine
    const swapped = { a: { dtype: 'F32', shape: [2], data_offsets: [8, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    const f = await SafetensorsFile.open(writeRaw(swapped, new Uint8Array(16)));
    expect([...f.tensors.keys()]).toEqual(['b', 'a']);
    await f.close();
  });

  it('a missing file', async () => {
    await expectOpenError(join(tmp, 'does-not-exist.safetensors'), 'cannot open');
  });
});

describe('safetensors fixtures written by Python', () => {
  it('reads reference.safetensors', async () => {
    const f = await SafetensorsFile.open(join(FIXTURES, 'reference.safetensors'));
    try {
      expect(f.info('input_ids')).toMatchObject({ dtype: 'I32', shape: [2, 24] });
      expect(f.info('labels')).toMatchObject({ dtype: 'I32', shape: [2, 24] });
      expect(f.info('nf4.packed')).toMatchObject({ dtype: 'U8', shape: [1536] });
      expect(f.info('nf4.absmax')).toMatchObject({ dtype: 'F32', shape: [48] });
      expect(f.info('base.logits_last')).toMatchObject({ dtype: 'F32', shape: [2, 151936] });
      const labels = new Int32Array((await f.readBytes('labels')).buffer);
      const ids = new Int32Array((await f.readBytes('input_ids')).buffer);
      expect(Array.from(labels.subarray(0, 10))).toEqual(new Array(10).fill(-100));
      expect(Array.from(labels.subarray(10, 24))).toEqual(Array.from(ids.subarray(10, 24)));
      expect(ids.every((t) => t >= 0 && t < 151936)).toBe(true);
      expect(f.metadata.note).toContain('float64');
    } finally {
      await f.close();
    }
  });

  it('reads the checkpoint shards and the adapter', async () => {
    const shard = await SafetensorsFile.open(join(FIXTURES, 'model/model-00002-of-00002.safetensors'));
    const adapter = await SafetensorsFile.open(join(FIXTURES, 'adapter/adapter_model.safetensors'));
    try {
      expect(shard.metadata).toEqual({ format: 'pt' });
      const down = shard.info('model.layers.0.mlp.down_proj.weight');
      expect(down).toMatchObject({ dtype: 'BF16', shape: [32, 96] });
      // readF32 of a BF16 tensor is exactly bf16 → f32 of its raw words
      const words = new Uint16Array((await shard.readBytes(down.name)).buffer);
      expect(await shard.readF32(down.name)).toEqual(bf16ToF32Array(words));
      expect(adapter.info('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')).toMatchObject({ dtype: 'F32', shape: [4, 32] });
      expect(adapter.info('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight')).toMatchObject({ dtype: 'F32', shape: [64, 4] });
    } finally {
      await shard.close();
      await adapter.close();
    }
  });
});
