import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { runExport } from '../../src/cli/export.js';
import { runCli } from '../../src/cli/main.js';
import { CheckpointError, ConfigError, ExportError, ShapeError } from '../../src/errors.js';
import { checkFreeSpace } from '../../src/export/export-command.js';
import { readPeftAdapter, savePeftAdapter } from '../../src/model/peft.js';
import { readQwen3Config } from '../../src/model/config.js';
import { PROJECTIONS, projectionShape, type Projection } from '../../src/model/checkpoint.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';

/** `prompt-lora export` end to end on the fixture model and adapter. */

let dir: string;
let logged: string[];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'export-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

function captureLog(): void {
  logged = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void logged.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation(() => {});
}

/** Temporary names left anywhere under `root`. */
function leftovers(root: string): string[] {
  const found: string[] = [];
  const walk = (d: string): void => {
    for (const f of readdirSync(d, { withFileTypes: true })) {
      if (f.name.includes('.tmp-') || f.name.includes('.old-')) found.push(join(d, f.name));
      if (f.isDirectory()) walk(join(d, f.name));
    }
  };
  walk(root);
  return found;
}

describe('export command', () => {
  it('writes adapter, merged folder, GGUF, base + LoRA GGUF and both Modelfiles; prints files, sizes and `ollama create`', async () => {
    captureLog();
    const out = join(dir, 'tiny');
    const code = await runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out, '--gguf', 'f16', '--lora-gguf', '--merged', '--modelfile']);
    expect(code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['Modelfile', 'Modelfile.adapter', 'adapter', 'merged', 'tiny-base-f16.gguf', 'tiny-f16.gguf', 'tiny-lora.gguf']);
    expect(readdirSync(join(out, 'adapter')).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(readdirSync(join(out, 'merged'))).toContain('model.safetensors.index.json');
    const text = logged.join('\n');
    for (const f of ['adapter', 'merged', 'tiny-f16.gguf', 'tiny-base-f16.gguf', 'tiny-lora.gguf', 'Modelfile', 'Modelfile.adapter']) {
      expect(text, f).toMatch(new RegExp(`${join(out, f).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+[\\d.]+ (B|kB|MB|GB)`));
    }
    expect(text).toContain(`ollama create tiny -f ${join(out, 'Modelfile')}`);
    const modelfile = readFileSync(join(out, 'Modelfile'), 'utf8');
    expect(modelfile).toContain('FROM ./tiny-f16.gguf\n');
    expect(readFileSync(join(out, 'Modelfile.adapter'), 'utf8')).toContain('FROM ./tiny-base-f16.gguf\nADAPTER ./tiny-lora.gguf\n');
    const lora = await readGgufFileInfo(join(out, 'tiny-lora.gguf'), { logWarnings: false });
    const md = lora.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(md.general.type).toBe('adapter');
    expect(md.adapter).toMatchObject({ type: 'lora', lora: { alpha: 8 } });
    expect(lora.tensorInfo!.find((t) => t.name === 'blk.0.attn_q.weight.lora_a')!.dimensions.map(Number)).toEqual([32, 4]);
    expect(lora.tensorInfo!.find((t) => t.name === 'blk.0.attn_q.weight.lora_b')!.dimensions.map(Number)).toEqual([4, 64]);
    const model = await readGgufFileInfo(join(out, 'tiny-f16.gguf'), { logWarnings: false, ignoreKeys: ['tokenizer.ggml.tokens', 'tokenizer.ggml.merges', 'tokenizer.ggml.token_type'] });
    const mm = model.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(mm.general).toMatchObject({ architecture: 'qwen3', type: 'model', name: 'tiny', file_type: 1 });
    expect(mm.qwen3).toMatchObject({ block_count: 2, embedding_length: 32, feed_forward_length: 96, context_length: 40960, attention: { head_count: 4, head_count_kv: 2, key_length: 16, value_length: 16 } });
    expect(mm.tokenizer).toMatchObject({ ggml: { model: 'gpt2', pre: 'qwen2', bos_token_id: 151643, eos_token_id: 151645, padding_token_id: 151643, add_bos_token: false } });
    expect(leftovers(dir)).toEqual([]);
  });

  it('from a run folder: the last checkpoint adapter, the run config in the Modelfile, q8_0 by default', async () => {
    captureLog();
    const run = join(dir, 'run');
    mkdirSync(run);
    cpSync(TINY_ADAPTER, join(run, 'checkpoint-20'), { recursive: true });
    cpSync(TINY_ADAPTER, join(run, 'checkpoint-100'), { recursive: true });
    writeFileSync(join(run, 'config.yaml'), `model_id: ${TINY_MODEL}\nsystem_prompt: "You write prompts."\nuser_prefix: "Scene: "\nmax_seq_length: 1024\n`);
    const out = join(dir, 'from-run');
    expect(await runExport(['--run', run, '--out', out, '--name', 'my-model'])).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['Modelfile', 'adapter', 'my-model-q8_0.gguf']);
    const modelfile = readFileSync(join(out, 'Modelfile'), 'utf8');
    expect(modelfile).toContain('SYSTEM """You write prompts."""');
    expect(modelfile).toContain('Scene: {{ .Content }}');
    expect(modelfile).toContain('PARAMETER num_ctx 1024');
    expect(modelfile).toContain(join(run, 'checkpoint-100'));
    expect(logged.join('\n')).toContain(`ollama create my-model -f ${join(out, 'Modelfile')}`);
  });

  it('bad input: unknown type, missing files, an adapter for another model shape, existing outputs, no disk space', async () => {
    captureLog();
    const out = join(dir, 'bad');
    await expect(runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out, '--gguf', 'q3_k'])).rejects.toThrow(ConfigError);
    await expect(runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out, '--gguf', 'q3_k'])).rejects.toThrow(/--gguf q3_k: unknown type; choose one of f32, f16/);
    await expect(runExport(['--model', TINY_MODEL, '--adapter', join(dir, 'nowhere'), '--out', out])).rejects.toThrow(CheckpointError);
    await expect(runExport(['--model', join(dir, 'nowhere'), '--adapter', TINY_ADAPTER, '--out', out])).rejects.toThrow(/config\.json/);
    await expect(runExport(['--adapter', TINY_ADAPTER, '--out', out])).rejects.toThrow(/needs --model DIR/);
    await expect(runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out, '--double-quant'])).rejects.toThrow(/--merge-base nf4 only/);

    // An adapter of rank 4 for a model with hidden size 48.
    const config = await readQwen3Config(TINY_MODEL);
    const wide = { ...config, hiddenSize: 48 };
    const adapter = await readPeftAdapter(TINY_ADAPTER, config);
    const shapes = Object.fromEntries(PROJECTIONS.map((p) => [p, projectionShape(wide, p)])) as Record<Projection, readonly [number, number]>;
    const layers = adapter.layers.map(() =>
      Object.fromEntries(PROJECTIONS.map((p) => [p, { a: new Float32Array(4 * shapes[p][1]), b: new Float32Array(shapes[p][0] * 4) }])),
    );
    const other = join(dir, 'other-adapter');
    await savePeftAdapter(other, { ...adapter, layers, shapes, rawConfig: undefined });
    await expect(runExport(['--model', TINY_MODEL, '--adapter', other, '--out', out])).rejects.toThrow(ShapeError);
    await expect(runExport(['--model', TINY_MODEL, '--adapter', other, '--out', out])).rejects.toThrow(/q_proj\.lora_A\.weight has shape \[4, 48\], expected \[4, 32\]/);
    expect(existsSync(out)).toBe(false);

    // Existing outputs are refused before anything is written.
    mkdirSync(out);
    writeFileSync(join(out, 'Modelfile'), 'keep');
    await expect(runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out])).rejects.toThrow(/Modelfile already exists.*--force/);
    expect(readdirSync(out)).toEqual(['Modelfile']);

    await expect(checkFreeSpace(out, 1e18)).rejects.toThrow(/needs about 1000000000\.00 GB \(plus a .* margin\) but only .* is free/);
    await expect(checkFreeSpace(join(out, 'not', 'yet'), 1000)).resolves.toBeUndefined();
  });

  it('a failure while writing leaves no temporary file behind', async () => {
    captureLog();
    const out = join(dir, 'fail');
    // The GGUF's final rename fails: a non-empty folder stands where the file should go.
    mkdirSync(join(out, 'fail-f32.gguf'), { recursive: true });
    writeFileSync(join(out, 'fail-f32.gguf', 'x'), 'x');
    await expect(runExport(['--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--out', out, '--gguf', 'f32', '--force'])).rejects.toThrow(ExportError);
    expect(leftovers(out)).toEqual([]);
    expect(readdirSync(out).sort()).toEqual(['adapter', 'fail-f32.gguf']);
  });

  it('is reachable as `prompt-lora export`', async () => {
    captureLog();
    expect(await runCli(['export', '--help'])).toBe(0);
    expect(logged.join('\n')).toMatch(/usage: prompt-lora export/);
    vi.spyOn(console, 'error').mockImplementation(() => {});
    expect(await runCli(['export', '--bogus'])).toBe(1);
  });
});
