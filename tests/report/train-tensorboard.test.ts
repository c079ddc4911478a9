import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTrainFolder } from '../cli/train-fixture.js';
import { readEventFile } from './tfevents-decoder.js';

/**
 * Issue 13 through the real CLI (`node train.js`, compiled: npm run build first): with
 * report_to tensorboard the run prints its start block and where the event files go, and the event
 * file (read by the test-only decoder) holds every step the run printed, at the printed loss;
 * report.html carries the run table.
 */
const TRAIN_JS = join(import.meta.dirname, '../../train.js');

function runTrainJs(cwd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [TRAIN_JS, ...args], { cwd, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

describe('node train.js with report_to tensorboard', () => {
  it('prints the start block and the log folder, and the event file has every printed step', async () => {
    const folder = makeTrainFolder('tensorboard', { report_to: 'tensorboard', export_gguf: null, export_modelfile: false });
    const run = await runTrainJs(folder.root, ['--config', folder.config]);
    expect(run.code, run.out).toBe(0);
    expect(run.out).toMatch(/^── run ─+$/m);
    expect(run.out).toMatch(/^effective batch +1 × 16 tokens × 1 accumulation = 16 tokens per optimiser step$/m);
    expect(run.out).toMatch(/^steps +\d+ per epoch, 4 total/m);
    expect(run.out).toMatch(/^compute path +.*loss head/m);
    const m = /^tensorboard: event files → (\S+); view with: tensorboard --logdir (\S+)$/m.exec(run.out);
    expect(m, run.out).not.toBeNull();
    expect(m![2]).toBe(join(folder.root, 'out', 'runs'));
    const files = readdirSync(m![1]);
    expect(files).toHaveLength(1);
    const events = readEventFile(new Uint8Array(readFileSync(join(m![1], files[0]))));
    const printed = [...run.out.matchAll(/^step (\d+)\/4 .*?loss ([\d.]+)/gm)].map((x) => [Number(x[1]), Number(x[2])]);
    expect(printed.map((p) => p[0])).toEqual([1, 2, 3, 4]);
    const logged = events.flatMap((e) => e.values.filter((v) => v.tag === 'train/loss').map((v) => [e.step, v.simpleValue!]));
    expect(logged.map((p) => p[0])).toEqual([1, 2, 3, 4]);
    // the terminal prints 4 decimals; the event file holds float32
    for (let i = 0; i < 4; i++) expect(Math.abs(logged[i][1] - printed[i][1])).toBeLessThan(1e-4);
    expect(events.some((e) => e.values.some((v) => v.tag === 'args/text_summary' && JSON.parse(v.strings![0]).report_to[0] === 'tensorboard'))).toBe(true);
    expect(readFileSync(join(folder.root, 'out', 'report.html'), 'utf8')).toContain('id="run-table"');
    expect(run.out).not.toContain('noise by design'); // not the embedded model
  }, 240_000);
});
