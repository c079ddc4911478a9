import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTrainFolder } from './train-fixture.js';

/**
 * `export --run DIR` on a train output folder and on one of its checkpoints (issue 12, item 3): the
 * model, the adapter and the rendering (system prompt) come from the run, no --model needed.
 */
const ROOT = join(import.meta.dirname, '../..');

function node(cwd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('export --run', () => {
  it('exports from a train output folder and from a checkpoint with the run\'s model and system prompt', async () => {
    const system = 'You write one haiku about the scene, nothing else.';
    const folder = makeTrainFolder('exportrun', { max_steps: 2, save_steps: 1, system_prompt: system, export_gguf: null, export_modelfile: false });
    const trained = await node(folder.root, [join(ROOT, 'train.js'), '--config', folder.config]);
    expect(trained.code, trained.out).toBe(0);
    for (const [run, out] of [
      [join(folder.root, 'out'), join(folder.root, 'exp-run')],
      [join(folder.root, 'out', 'checkpoint-1'), join(folder.root, 'exp-ckpt')],
    ]) {
      const exported = await node(folder.root, [join(ROOT, 'bin', 'prompt-lora.js'), 'export', '--run', run, '--out', out, '--gguf', 'f16', '--modelfile']);
      expect(exported.code, exported.out).toBe(0);
      expect(exported.out).toContain(`on ${folder.model}`);
      expect(readFileSync(join(out, 'Modelfile'), 'utf8')).toContain(system);
      expect(existsSync(join(out, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    }
    // generate takes the run folder the same way, and refuses lengths past the model's context.
    const context = JSON.parse(readFileSync(join(folder.model, 'config.json'), 'utf8')).max_position_embeddings as number;
    const generated = await node(folder.root, [join(ROOT, 'bin', 'prompt-lora.js'), 'generate', '--run', join(folder.root, 'out'), '--chat', 'a red fox', '--max-new-tokens', '2', '--temperature', '0']);
    expect(generated.code, generated.out).toBe(0);
    const tooLong = await node(folder.root, [join(ROOT, 'bin', 'prompt-lora.js'), 'generate', '--run', join(folder.root, 'out'), '--prompt', 'a red fox', '--max-new-tokens', String(context)]);
    expect(tooLong.code).not.toBe(0);
    expect(tooLong.out).toMatch(new RegExp(`past the model's context of ${context} tokens`));
  }, 240_000);
});
