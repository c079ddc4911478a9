import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runInspect } from '../../src/cli/inspect.js';
import { ShapeError } from '../../src/errors.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { SafetensorsWriter } from '../../src/model/safetensors-writer.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';

/** `prompt-lora inspect` end to end on the fixture: its output file against the PEFT reference. */
describe('inspect command', () => {
  let dir: string;
  let ref: Awaited<ReturnType<typeof readReference>>;
  const writeBatch = async (name: string, ids: Int32Array, labels: Int32Array, shape: [number, number]): Promise<string> => {
    const path = join(dir, name);
    const w = await SafetensorsWriter.create(path, [
      { name: 'input_ids', dtype: 'I32', shape },
      { name: 'labels', dtype: 'I32', shape },
    ]);
    await w.write('input_ids', ids);
    await w.write('labels', labels);
    await w.finish();
    return path;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'inspect-'));
    ref = await readReference();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes loss, logits_last, layer_out.* and grad.* that match the fixture (NF4 base + adapter)', async () => {
    const batch = await writeBatch('batch.safetensors', ref.get('input_ids')!.i32!, ref.get('labels')!.i32!, [2, 24]);
    const out = join(dir, 'out.safetensors');
    expect(await runInspect(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--base', 'nf4', '--batch', batch, '--out', out, '--grads'])).toBe(0);
    const f = await SafetensorsFile.open(out);
    try {
      expect(f.info('logits_last').shape).toEqual([2, 151936]);
      expect(f.info('layer_out.1').shape).toEqual([2, 24, 32]);
      expectRelNorm('loss', await f.readF32('loss'), ref.get('lora_nf4.loss')!.data, 1e-4);
      expectRelNorm('logits_last', await f.readF32('logits_last'), ref.get('lora_nf4.logits_last')!.data, 1e-4);
      const grads = [...f.tensors.keys()].filter((k) => k.startsWith('grad.'));
      expect(grads.length).toBe(28);
      for (const key of grads) expectRelNorm(key, await f.readF32(key), ref.get(`lora_nf4.${key}`)!.data, 1e-4);
    } finally {
      await f.close();
    }
  });

  it('refuses token ids outside the vocabulary, naming the position', async () => {
    const ids = new Int32Array(6).fill(5);
    ids[4] = 151936;
    const batch = await writeBatch('bad.safetensors', ids, new Int32Array(6).fill(-100), [2, 3]);
    await expect(runInspect(['--model', TINY_MODEL, '--base', 'full', '--batch', batch, '--out', join(dir, 'x.safetensors')])).rejects.toThrow(/input_ids\[1, 1\] = 151936/);
  });

  it('refuses labels of another shape', async () => {
    const path = join(dir, 'shape.safetensors');
    const w = await SafetensorsWriter.create(path, [
      { name: 'input_ids', dtype: 'I32', shape: [2, 3] },
      { name: 'labels', dtype: 'I32', shape: [3, 2] },
    ]);
    await w.write('input_ids', new Int32Array(6));
    await w.write('labels', new Int32Array(6));
    await w.finish();
    await expect(runInspect(['--model', TINY_MODEL, '--batch', path, '--out', join(dir, 'y.safetensors')])).rejects.toThrow(ShapeError);
  });
});
