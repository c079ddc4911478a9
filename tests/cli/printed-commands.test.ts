import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundledConfigPath, resumeCommand, shellWord, shownPath, trainCommand } from '../../src/config/command-line.js';
import { packageRoot } from '../../src/config/paths.js';
import { bundledQwen3TokenizerDir } from '../../src/model/tokenizer.js';
import { embeddedNotice, realFineTuneCommand } from '../../src/report/embedded-notice.js';
import { startFakeHub, type FakeHub } from '../data/hub-server.js';

/**
 * Commands the program prints for the user (the real fine-tune of the embedded notice, the resume
 * hint) work as printed from a folder other than the project's: they name train.js and the bundled
 * config so that a shell in the user's folder finds them. The real fine-tune is run exactly as
 * printed, in a fresh folder, against a local stand-in for the Hub that serves the tiny Qwen3
 * fixture as Qwen/Qwen3-4B-Instruct-2507, interrupted during its first step; then the resume hint
 * it prints is run as printed and interrupted again.
 */
const FIXTURE_MODEL = new URL('../../../shared/fixtures/qwen3-tiny/model', import.meta.url).pathname;
const ROOT = packageRoot();

describe('shown paths', () => {
  it('names a path below the working folder relatively and anything else absolutely, shell-quoted', () => {
    expect(shownPath(join(ROOT, 'train.js'), ROOT)).toBe('train.js');
    expect(shownPath(join(ROOT, 'configs', 'a.yaml'), join(ROOT, 'configs'))).toBe('a.yaml');
    expect(shownPath(join(ROOT, 'train.js'), '/elsewhere')).toBe(join(ROOT, 'train.js'));
    expect(shownPath('/data/my runs/b', '/')).toBe(`'data/my runs/b'`);
    expect(shellWord(`it's`)).toBe(`'it'\\''s'`);
    expect(trainCommand(['--config', 'x y.yaml'], ROOT)).toBe(`node train.js --config 'x y.yaml'`);
    expect(resumeCommand(join(ROOT, 'outputs', 'r', 'checkpoint-4'), ROOT)).toBe('node train.js --resume outputs/r/checkpoint-4');
    expect(resumeCommand('/runs/b', '/tmp')).toBe(`node ${shellWord(join(ROOT, 'train.js'))} --resume /runs/b`);
    expect(bundledConfigPath('qwen3-4b-deforum-v7.yaml', ROOT)).toBe('configs/qwen3-4b-deforum-v7.yaml');
    expect(realFineTuneCommand(ROOT)).toBe('node train.js --config configs/qwen3-4b-deforum-v7.yaml');
    // A project and a run folder whose paths need quoting: each word quoted once.
    const spaced = '/opt/my tools/plt';
    expect(trainCommand(['--config', bundledConfigPath('v7.yaml', '/home', spaced)], '/home', spaced)).toBe(`node '/opt/my tools/plt/train.js' --config '/opt/my tools/plt/configs/v7.yaml'`);
    expect(resumeCommand('/runs/my run/checkpoint-2', '/tmp', spaced)).toBe(`node '/opt/my tools/plt/train.js' --resume '/runs/my run/checkpoint-2'`);
    expect(embeddedNotice('/tmp').join('\n')).toContain(`node ${join(ROOT, 'train.js')} --config ${join(ROOT, 'configs', 'qwen3-4b-deforum-v7.yaml')}`);
  });
});

interface Run {
  code: number | null;
  out: string;
}

function shell(cwd: string, command: string, env: Record<string, string>, stopWhen: RegExp, limitMs = 120_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/bash', ['-c', command], {
      cwd,
      env: { ...process.env, ...env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    // The shell and what it starts form one process group: signal the group, as a terminal's Ctrl-C does
    // (bash -c runs a lone command in its own process, so the exit code is the program's).
    const signal = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        // already gone
      }
    };
    let out = '';
    let sent = false;
    const take = (b: Buffer): void => {
      out += b.toString();
      if (!sent && stopWhen.test(out)) {
        sent = true;
        signal('SIGINT');
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    // A run that never reaches `stopWhen` is killed, so the failure shows its output.
    const limit = setTimeout(() => signal('SIGKILL'), limitMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(limit);
      resolve({ code, out });
    });
  });
}

describe('printed commands run as printed from another folder', () => {
  let hub: FakeHub;
  let env: Record<string, string>;
  beforeAll(async () => {
    const files: Record<string, Buffer> = {};
    for (const f of readdirSync(FIXTURE_MODEL)) files[f] = readFileSync(join(FIXTURE_MODEL, f));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) files[f] = readFileSync(join(bundledQwen3TokenizerDir(), f));
    hub = await startFakeHub([{ type: 'model', id: 'Qwen/Qwen3-4B-Instruct-2507', commit: 'd'.repeat(40), files }]);
    env = { HF_ENDPOINT: hub.url, HF_HOME: mkdtempSync(join(tmpdir(), 'printed-hf-')) };
  });
  afterAll(async () => {
    await hub?.close();
  });

  it("the embedded notice's real fine-tune, then its resume hint", async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'printed-cwd-'));
    const command = realFineTuneCommand(cwd);
    expect(command).toBe(`node ${join(ROOT, 'train.js')} --config ${join(ROOT, 'configs', 'qwen3-4b-deforum-v7.yaml')}`);
    // Ctrl-C once training has started: the loop finishes step 1, checkpoints it and exits 130.
    const first = await shell(cwd, command, env, /^training: 270 optimiser steps/m);
    expect(first.code, first.out).toBe(130);
    expect(first.out).toMatch(/^interrupted at step 1: checkpoint /m);
    const out = join(cwd, 'outputs', 'qwen3-4b-deforum-v7');
    expect(existsSync(join(out, 'config.yaml')), first.out).toBe(true);
    const hint = /continue with: (.+)$/m.exec(first.out);
    expect(hint, first.out).not.toBeNull();
    expect(hint![1]).toContain(join(ROOT, 'train.js'));

    const second = await shell(cwd, hint![1], env, /^resumed from /m);
    expect(second.code, second.out).toBe(130);
    expect(second.out).toMatch(/^resumed from .*checkpoint-1: step 1\/270/m);
    expect(second.out).toMatch(/^interrupted at step 2: checkpoint /m);
    expect(readdirSync(cwd)).toEqual(['outputs']);
  }, 300_000);
});
