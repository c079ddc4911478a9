import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { removeStaleTemporaries, temporaryName, temporaryOwners } from '../../src/io/temp-name.js';

/**
 * Crash leftovers: a child process (the built writers in dist/, `npm run build` first) is killed
 * with SIGKILL in the middle of writing a GGUF-like file, a checkpoint folder with an adapter
 * folder inside it, and a report; the next start-up's removeStaleTemporaries leaves nothing of them.
 */
const DIST_IO = join(import.meta.dirname, '../../dist/src/io');

function childScript(dir: string): string {
  const file = pathToFileURL(join(DIST_IO, 'atomic-file.js')).href;
  const folder = pathToFileURL(join(DIST_IO, 'atomic-dir.js')).href;
  return `
import { AtomicFile } from ${JSON.stringify(file)};
import { writeDirAtomic } from ${JSON.stringify(folder)};
import { join } from 'node:path';
const dir = ${JSON.stringify(dir)};
const gguf = await AtomicFile.create(join(dir, 'run-q8_0.gguf'));
await gguf.write(new Uint8Array(1 << 20));
const report = await AtomicFile.create(join(dir, 'report.html'));
await report.write(new TextEncoder().encode('<html>'));
// a checkpoint's temporary folder; the adapter inside it is written as the checkpoint writer does
// (savePeftAdapter(temp) → writeDirAtomic(temp) → '<temp>.tmp-<pid>', a nested temporary name)
await writeDirAtomic(join(dir, 'checkpoint-6'), { overwrite: true }, async (temp) => {
  await writeDirAtomic(temp, { overwrite: true }, async () => {
    console.log('writing');
    await new Promise(() => {}); // killed here
  });
});
`;
}

function killMidWrite(dir: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', childScript(dir)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += String(d)));
    child.stdout.on('data', (d) => {
      if (String(d).includes('writing')) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve(child.pid!) : reject(new Error(`child exited ${code}: ${err}`))));
  });
}

describe('temporary names', () => {
  it('every writer uses <final>.<kind>-<pid>, nested names included', () => {
    expect(temporaryName('/a/b.gguf', 'tmp', 7)).toBe('/a/b.gguf.tmp-7');
    expect(temporaryOwners('checkpoint-6.tmp-41.tmp-42')).toEqual([41, 42]);
    expect(temporaryOwners('adapter.old-3')).toEqual([3]);
    expect(temporaryOwners('checkpoint-4.deleting-9')).toEqual([9]);
    expect(temporaryOwners('run-q8_0.gguf')).toBeNull();
    expect(temporaryOwners('notes.tmp-x')).toBeNull();
    expect(temporaryOwners('.tmp-5')).toBeNull();
  });

  it('a writer killed with SIGKILL mid-write leaves nothing that survives the next start-up', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'killed-writer-'));
    writeFileSync(join(dir, 'kept.txt'), 'a file of the run');
    const pid = await killMidWrite(dir);
    const left = readdirSync(dir).sort();
    // the kill did leave temporaries, under the pattern (the adapter's one nested in the checkpoint's)
    expect(left).toEqual([`checkpoint-6.tmp-${pid}`, `checkpoint-6.tmp-${pid}.tmp-${pid}`, 'kept.txt', `report.html.tmp-${pid}`, `run-q8_0.gguf.tmp-${pid}`].sort());
    // and one of a live process (this one) that must be left alone
    mkdirSync(join(dir, temporaryName('checkpoint-10')));

    const removed = await removeStaleTemporaries(dir);
    expect(removed.sort()).toEqual([`checkpoint-6.tmp-${pid}`, `checkpoint-6.tmp-${pid}.tmp-${pid}`, `report.html.tmp-${pid}`, `run-q8_0.gguf.tmp-${pid}`].sort());
    expect(readdirSync(dir).sort()).toEqual([temporaryName('checkpoint-10'), 'kept.txt'].sort());
    expect(existsSync(join(dir, 'kept.txt'))).toBe(true);
  });
});
