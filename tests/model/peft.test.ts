import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckpointError, ExportError, ShapeError } from '../../src/errors.js';
import { adapterFromGpu, readPeftAdapter, savePeftAdapter } from '../../src/model/peft.js';
import { readQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { createLoraAdapter } from '../../src/model/lora-init.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { SafetensorsFile } from '../../src/model/safetensors.js';
import { SafetensorsWriter } from '../../src/model/safetensors-writer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/** PEFT adapter folders: the fixture (written by PEFT 0.21) read, saved again, compared byte for byte. */
describe('PEFT adapter save and load', () => {
  let dir: string;
  let config: Qwen3Config;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'peft-'));
    config = await readQwen3Config(TINY_MODEL);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('round trip: the saved adapter_model.safetensors has the fixture\'s bytes; the config its values', async () => {
    const adapter = await readPeftAdapter(TINY_ADAPTER, config);
    expect(adapter.config.r).toBe(4);
    expect(adapter.scale).toBe(2);
    const out = join(dir, 'roundtrip');
    await savePeftAdapter(out, adapter);
    expect(readdirSync(out).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(Buffer.compare(readFileSync(join(out, 'adapter_model.safetensors')), readFileSync(join(TINY_ADAPTER, 'adapter_model.safetensors')))).toBe(0);
    const ours = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    const theirs = JSON.parse(readFileSync(join(TINY_ADAPTER, 'adapter_config.json'), 'utf8'));
    expect(ours).toEqual(theirs);
    expect(Object.keys(ours)).toEqual(Object.keys(ours).sort());
    // And it reads back to the same numbers.
    const again = await readPeftAdapter(out, config);
    for (let l = 0; l < config.numHiddenLayers; l++) {
      for (const p of adapter.config.targetModules) {
        expect(again.layers[l][p]!.a).toEqual(adapter.layers[l][p]!.a);
        expect(again.layers[l][p]!.b).toEqual(adapter.layers[l][p]!.b);
      }
    }
  });

  it('an adapter on the GPU (training\'s form) saves to the same bytes', async () => {
    const gpu = await testGpu();
    const onGpu = await loadLoraAdapter(gpu, TINY_ADAPTER, config);
    const out = join(dir, 'from-gpu');
    await savePeftAdapter(out, await adapterFromGpu(gpu, onGpu, config), { baseModel: 'Qwen/Qwen3-4B-Instruct-2507' });
    expect(Buffer.compare(readFileSync(join(out, 'adapter_model.safetensors')), readFileSync(join(TINY_ADAPTER, 'adapter_model.safetensors')))).toBe(0);
    const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, lora_dropout: 0, bias: 'none', use_rslora: false, use_dora: false });
    expect(cfg.base_model_name_or_path).toBe('Qwen/Qwen3-4B-Instruct-2507');
    expect(cfg.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    // A new adapter (PEFT's init: B = 0) with fewer targets loads back with the loader training uses.
    const fresh = createLoraAdapter(gpu, config, { r: 2, alpha: 4, dropout: 0.05, targetModules: ['q_proj', 'v_proj'], useRslora: true }, 7);
    const freshDir = join(dir, 'fresh');
    await savePeftAdapter(freshDir, await adapterFromGpu(gpu, fresh, config));
    const back = await loadLoraAdapter(gpu, freshDir, config);
    expect(back.config).toEqual(fresh.config);
    expect(await gpu.readF32(back.layers[1].v_proj!.a)).toEqual(await gpu.readF32(fresh.layers[1].v_proj!.a));
  });

  it('refuses an adapter made for another model shape, missing and extra tensors', async () => {
    const wide = { ...config, hiddenSize: 64 };
    await expect(readPeftAdapter(TINY_ADAPTER, wide)).rejects.toThrow(ShapeError);
    await expect(readPeftAdapter(TINY_ADAPTER, wide)).rejects.toThrow(/q_proj\.lora_A\.weight has shape \[4, 32\], expected \[4, 64\].*another shape/);
    await expect(readPeftAdapter(TINY_ADAPTER, { ...config, numHiddenLayers: 1 })).rejects.toThrow(/not expected for a 1-layer model/);
    await expect(readPeftAdapter(TINY_ADAPTER, { ...config, numHiddenLayers: 3 })).rejects.toThrow(/missing tensor base_model\.model\.model\.layers\.2\./);
    await expect(readPeftAdapter(join(dir, 'nowhere'), config)).rejects.toThrow(CheckpointError);

    // A config that targets a module with no tensors in the file.
    const partial = join(dir, 'partial');
    mkdirSync(partial);
    copyFileSync(join(TINY_ADAPTER, 'adapter_model.safetensors'), join(partial, 'adapter_model.safetensors'));
    writeFileSync(join(partial, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'] }));
    await expect(readPeftAdapter(partial, config)).rejects.toThrow(/tensor\(s\) not expected/);
  });

  it('refuses to overwrite an existing folder unless asked, leaving no temporary folder', async () => {
    const adapter = await readPeftAdapter(TINY_ADAPTER, config);
    const out = join(dir, 'existing');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'x');
    await expect(savePeftAdapter(out, adapter)).rejects.toThrow(ExportError);
    expect(readdirSync(out)).toEqual(['keep.txt']);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await savePeftAdapter(out, adapter, { overwrite: true });
    expect(readdirSync(out).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });

  it('reads BF16 adapter tensors (widened exactly)', async () => {
    const src = await SafetensorsFile.open(join(TINY_ADAPTER, 'adapter_model.safetensors'));
    const out = join(dir, 'bf16');
    mkdirSync(out);
    copyFileSync(join(TINY_ADAPTER, 'adapter_config.json'), join(out, 'adapter_config.json'));
    const names = [...src.tensors.keys()];
    const w = await SafetensorsWriter.create(join(out, 'adapter_model.safetensors'), names.map((n) => ({ name: n, dtype: 'BF16', shape: src.info(n).shape })));
    for (const n of names) {
      const f = await src.readF32(n);
      await w.write(n, new Uint16Array(new Uint32Array(f.buffer).map((u) => u >>> 16)));
    }
    await w.finish();
    await src.close();
    const a = await readPeftAdapter(out, config);
    expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
    const q = a.layers[0].q_proj!.a;
    expect(q.every((v) => (new Uint32Array(new Float32Array([v]).buffer)[0] & 0xffff) === 0)).toBe(true);
  });
});
