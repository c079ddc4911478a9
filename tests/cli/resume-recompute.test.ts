import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TINY_MODEL } from '../helpers/fixtures.js';
import { makeTrainFolder } from './train-fixture.js';

/**
 * The recompute policy `gradient_checkpointing: auto` chose is printed and kept in run.json, and a
 * resumed run keeps it (issue 11 item 6), through the real CLI: a run on a max_memory too small for
 * any plan recomputes every layer; resumed with room to spare it keeps every layer recomputed, says
 * so and what a fresh plan would pick, and run.json records the resume's policy beside the start's.
 */
const TRAIN_JS = join(import.meta.dirname, '../../train.js');

function train(cwd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TRAIN_JS, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('gradient_checkpointing: auto across a resume', () => {
  it('run.json records the chosen policy, and the resumed run keeps it', async () => {
    const L = (JSON.parse(readFileSync(join(TINY_MODEL, 'config.json'), 'utf8')) as { num_hidden_layers: number }).num_hidden_layers;
    const folder = makeTrainFolder('auto-recompute', { save_steps: 1, max_steps: 1, max_memory: '2.1GiB', export_gguf: null, export_modelfile: false }); // gradient_checkpointing absent: auto
    const out = join(folder.root, 'out');

    const first = await train(folder.root, ['--config', folder.config]);
    expect(first.code, first.out).toBe(0);
    expect(first.out).toMatch(/^gradient checkpointing: auto: every layer recomputed, and the plan is still over .* of max_memory/m);
    const started = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8'));
    expect(started.recompute).toMatchObject({ setting: 'auto', checkpoint_layers: L, layers: L });
    expect(started.recompute.why).toMatch(/still over/);
    expect(typeof started.recompute.device).toBe('string');

    const resumed = await train(folder.root, ['--resume', 'out', '--set', 'max_steps=2', '--set', 'max_memory=4GiB']);
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.out).toMatch(new RegExp(`^gradient checkpointing: auto: ${L} of ${L} layers recomputed when this run last trained \\(run\\.json, on .*\\), kept on resume; a fresh plan here would recompute 0 `, 'm'));
    const after = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8'));
    expect(after.recompute).toEqual(started.recompute);
    expect(after.resumes).toHaveLength(1);
    expect(after.resumes[0].recompute).toMatchObject({ setting: 'auto', checkpoint_layers: L, layers: L });
    expect(after.resumes[0].recompute.why).toMatch(/kept on resume/);

    // --dry-run of the resume plans as the resumed run would.
    const dry = await train(folder.root, ['--resume', 'out', '--dry-run', '--set', 'max_memory=4GiB']);
    expect(dry.code, dry.out).toBe(0);
    expect(dry.out).toMatch(new RegExp(`^gradient checkpointing: auto: ${L} of ${L} layers recomputed when this run last trained .*kept on resume`, 'm'));
  }, 300_000);
});
