import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { exportName, exportRun } from '../../src/export/run-export.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';

/** The export at the end of a run (exportRun) on the fixture model and adapter. */

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'run-export-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const configWith = (keys: Record<string, unknown>) => resolveConfig({ model_id: TINY_MODEL, ...keys }, 'test config').config;

describe('exportRun', () => {
  it('with the defaults writes the adapter, a q8_0 GGUF llama.cpp reads and its Modelfile into the run folder', async () => {
    const out = join(dir, 'my-run');
    const config = configWith({});
    expect([config.export_gguf, config.export_modelfile, config.export_lora_gguf, config.export_merged]).toEqual(['q8_0', true, false, false]);
    const lines: string[] = [];
    const r = await exportRun({ config, modelDir: TINY_MODEL, adapterDir: TINY_ADAPTER, outDir: out, log: (l) => lines.push(l), threads: 1 });
    expect(readdirSync(out).sort()).toEqual(['Modelfile', 'adapter', 'my-run-q8_0.gguf']);
    expect(r.files.map((f) => f.path.slice(out.length + 1)).sort()).toEqual(['Modelfile', 'adapter', 'my-run-q8_0.gguf']);
    for (const f of r.files) {
      const bytes = statSync(f.path).isDirectory() ? readdirSync(f.path).reduce((a, x) => a + statSync(join(f.path, x)).size, 0) : statSync(f.path).size;
      expect(f.bytes, f.path).toBe(bytes);
      expect(f.bytes).toBeGreaterThan(0);
    }
    expect(lines.some((l) => l.startsWith('writing ') && l.includes('my-run-q8_0.gguf'))).toBe(true);
    // llama.cpp's own GGUF reader: a qwen3 model of the fixture's shape, q8_0 weights
    const info = await readGgufFileInfo(join(out, 'my-run-q8_0.gguf'));
    expect(info.metadata.general.architecture).toBe('qwen3');
    expect(info.metadata.general.name).toBe('my-run');
    expect(info.fullTensorInfo!.some((t) => t.name === 'blk.0.attn_q.weight')).toBe(true);
    // the Modelfile loads the GGUF next to it and keeps the run's system prompt
    const modelfile = readFileSync(join(out, 'Modelfile'), 'utf8');
    expect(modelfile).toContain('FROM ./my-run-q8_0.gguf\n');
    expect(modelfile).toContain(`SYSTEM """${config.system_prompt}"""`);
    expect(r.commands.ollamaCreate).toMatch(/^ollama create my-run -f .*my-run[\\/]Modelfile$/);
    expect(r.commands.llamaCli).toMatch(/^llama-cli -m .*my-run-q8_0\.gguf -cnv$/);
    expect(r.summary.join('\n')).toContain(r.commands.ollamaCreate!);
    expect(r.summary.join('\n')).toMatch(/my-run-q8_0\.gguf\s+[\d.]+ (kB|MB)\s+merged model GGUF \(q8_0\)/);

    // a second run into the same folder replaces its exports; the adapter it reads from
    // <out>/adapter (what train.js saved there) is listed, not written over itself
    const adapterFiles = (): [string, number][] =>
      readdirSync(join(out, 'adapter')).sort().map((f) => [f, statSync(join(out, 'adapter', f)).mtimeMs]);
    const before = adapterFiles();
    const againLines: string[] = [];
    const again = await exportRun({ config, modelDir: TINY_MODEL, adapterDir: join(out, 'adapter'), outDir: out, threads: 1, log: (l) => againLines.push(l) });
    expect(again.files.length).toBe(3);
    expect(adapterFiles()).toEqual(before);
    expect(againLines.some((l) => l.includes(`${join(out, 'adapter')} (PEFT adapter)`))).toBe(false);
    expect(againLines.some((l) => l.includes('my-run-q8_0.gguf'))).toBe(true);
    expect(readdirSync(out).sort()).toEqual(['Modelfile', 'adapter', 'my-run-q8_0.gguf']);
  });

  it('with export_lora_gguf and no merged GGUF writes base + LoRA GGUFs and a llama-cli --lora line', async () => {
    const out = join(dir, 'lora-only');
    const config = configWith({ export_gguf: null, export_lora_gguf: true, export_modelfile: false, export_merged: true });
    const r = await exportRun({ config, modelDir: TINY_MODEL, adapterDir: TINY_ADAPTER, outDir: out, threads: 1 });
    expect(readdirSync(out).sort()).toEqual(['adapter', 'lora-only-base-f16.gguf', 'lora-only-lora.gguf', 'merged']);
    expect(r.commands.ollamaCreate).toBeUndefined();
    expect(r.commands.llamaCli).toMatch(/^llama-cli -m .*lora-only-base-f16\.gguf --lora .*lora-only-lora\.gguf -cnv$/);
    const lora = await readGgufFileInfo(join(out, 'lora-only-lora.gguf'));
    expect(lora.metadata.general.type).toBe('adapter');
  });

  it('refuses a Modelfile without any GGUF when the config is read, before any training', () => {
    expect(() => configWith({ export_gguf: null, export_modelfile: true })).toThrow(ConfigError);
    expect(() => configWith({ export_gguf: null, export_modelfile: true })).toThrow(/export_modelfile: the Modelfile needs a GGUF/);
    expect(() => configWith({ export_gguf: 'q5_1' })).toThrow(/export_gguf/);
  });

  it('names the model after the folder, made safe for files and Ollama', () => {
    expect(exportName('/x/outputs/embedded-default')).toBe('embedded-default');
    expect(exportName('/x/my run (2)')).toBe('my-run-2-');
  });
});
