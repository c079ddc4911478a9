import { spawn } from 'node:child_process';
import { cpSync, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listCheckpoints } from '../../src/train/checkpoint-reader.js';
import { makeTrainFolder } from './train-fixture.js';

/**
 * A run folder describes itself and holds one run (issue 12, items 1 and 2), through the real CLI
 * in child processes: a run with a non-default config and output folder is interrupted (SIGINT),
 * the command it prints is run exactly as printed (a shell, in the same working directory) and the
 * adapter equals an uninterrupted run's byte for byte, with nothing written outside the run folder;
 * a new run into a folder holding another run is refused unless --overwrite, which removes it; and
 * `--resume` with no folder resumes only the run recorded there.
 */
const TRAIN_JS = join(import.meta.dirname, '../../train.js');

interface Run {
  code: number | null;
  out: string;
}

function runIn(cwd: string, file: string, args: string[], onOutput?: (out: string, signal: () => void) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
    const child = spawn(file, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const take = (b: Buffer): void => {
      out += b.toString();
      onOutput?.(out, () => child.kill('SIGINT'));
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}
const train = (cwd: string, args: string[], onOutput?: (out: string, signal: () => void) => void): Promise<Run> => runIn(cwd, process.execPath, [TRAIN_JS, ...args], onOutput);

/** path → size and mtime of every file under `root`, except under `skip`. */
function snapshot(root: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (p === skip) continue;
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out.set(relative(root, p), `${st.size} ${st.mtimeMs}`);
    }
  };
  walk(root);
  return out;
}

describe('a run folder', () => {
  it('the interruption hint, run as printed, continues that run to the uninterrupted adapter; a folder holds one run', async () => {
    const folder = makeTrainFolder('runfolder', { save_steps: 2 });
    const flags = ['--config', folder.config, '--set', 'max_steps=5', '--set', 'learning_rate=0.02'];

    const reference = await train(folder.root, [...flags, '--output-dir', 'runs/a']);
    expect(reference.code, reference.out).toBe(0);
    const a = join(folder.root, 'runs', 'a');
    for (const f of ['config.yaml', 'run.json', 'rendering.json', 'adapter/adapter_model.safetensors']) expect(existsSync(join(a, f)), f).toBe(true);
    const record = JSON.parse(readFileSync(join(a, 'run.json'), 'utf8'));
    expect(record.model_dir).toBe(folder.model);
    expect(record.dataset_id).toBe(join(folder.root, 'data'));
    const rendering = JSON.parse(readFileSync(join(a, 'rendering.json'), 'utf8'));
    expect(typeof rendering.chat_template).toBe('string');
    expect(readFileSync(join(a, 'config.yaml'), 'utf8')).toMatch(/^max_steps: 5$/m);

    let sent = false;
    const first = await train(folder.root, [...flags, '--output-dir', 'runs/b'], (out, signal) => {
      if (!sent && /^step 1\/5/m.test(out)) {
        sent = true;
        signal();
      }
    });
    expect(first.code, first.out).toBe(130);
    const hint = /continue with: (.+)$/m.exec(first.out);
    expect(hint, first.out).not.toBeNull();
    const b = join(folder.root, 'runs', 'b');
    const before = snapshot(folder.root, b);
    const second = await runIn(folder.root, '/bin/sh', ['-c', hint![1]]);
    expect(second.code, second.out).toBe(0);
    expect(second.out).toMatch(/^done: 5 steps/m);
    expect(readFileSync(join(b, 'adapter', 'adapter_model.safetensors')).equals(readFileSync(join(a, 'adapter', 'adapter_model.safetensors')))).toBe(true);
    expect(snapshot(folder.root, b)).toEqual(before);

    // A flag that contradicts the run being resumed is refused, naming the key.
    const contra = await train(folder.root, ['--resume', 'runs/b', '--set', 'lora_r=8']);
    expect(contra.code).not.toBe(0);
    expect(contra.out).toMatch(/lora_r is 4 in the checkpoint but 8 now/);
    const moved = await train(folder.root, ['--resume', 'runs/b', '--output-dir', 'runs/c']);
    expect(moved.code).not.toBe(0);
    expect(moved.out).toMatch(/output_dir is "runs\/c" but the run being resumed lives in "runs\/b"/);
    expect(existsSync(join(folder.root, 'runs', 'c'))).toBe(false);

    // A new run into runs/a (a finished run) is refused; nothing there changes.
    const aBefore = snapshot(a, '');
    const refused = await train(folder.root, [...flags, '--output-dir', 'runs/a', '--set', 'max_steps=2']);
    expect(refused.code).not.toBe(0);
    expect(refused.out).toMatch(/holds another run .*--overwrite/);
    expect(snapshot(a, '')).toEqual(aBefore);

    // --overwrite removes the old run's checkpoints, metrics and exports first.
    const old = join(folder.root, 'old-checkpoint-2');
    cpSync(join(a, 'checkpoint-2'), old, { recursive: true });
    const fresh = await train(folder.root, [...flags, '--output-dir', 'runs/a', '--set', 'max_steps=1', '--overwrite']);
    expect(fresh.code, fresh.out).toBe(0);
    expect((await listCheckpoints(a)).map((c) => c.step)).toEqual([1]);
    expect(existsSync(join(a, 'checkpoint-5'))).toBe(false);
    const metrics = readFileSync(join(a, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(metrics.filter((m) => typeof m.step === 'number').every((m) => m.step <= 1)).toBe(true);

    // An earlier run's checkpoint lying in the folder (newer step) is not resumed by --resume alone.
    cpSync(old, join(a, 'checkpoint-2'), { recursive: true });
    const resumed = await train(folder.root, [...flags, '--output-dir', 'runs/a', '--set', 'max_steps=1', '--resume']);
    expect(resumed.code, resumed.out).toBe(0);
    expect(resumed.out).toContain('resumed from runs/a/checkpoint-1: step 1/1');
    expect(resumed.out).not.toContain('checkpoint-2:');
  }, 400_000);
});
