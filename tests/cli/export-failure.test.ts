import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { plannedExportBytes } from '../../src/export/space-check.js';
import { makeTrainFolder } from './train-fixture.js';

/**
 * An export that fails after training: exit 1, the run marked failed in report.html and
 * metrics.jsonl, the adapter kept, and the printed command (run exactly as printed) redoes only the export.
 */
const TRAIN_JS = join(import.meta.dirname, '../../train.js');

describe('train: an export failure after training', () => {
  it('marks the run failed, keeps the adapter, and prints a command that redoes the export', async () => {
    const folder = makeTrainFolder('export-fails', { export_gguf: 'q8_0', export_modelfile: false, max_steps: 2 });
    const out = join(folder.root, 'out');
    // the GGUF's final name is taken by a folder: the rename at the end of the GGUF write fails
    mkdirSync(join(out, 'out-q8_0.gguf', 'blocker'), { recursive: true });
    const first = spawnSync(process.execPath, [TRAIN_JS, '--config', folder.config], { cwd: folder.root, encoding: 'utf8' });
    const text = first.stdout + first.stderr;
    expect(first.status, text).toBe(1);
    const m = /redo only the export with: (.+)$/m.exec(text);
    expect(m, text).not.toBeNull();
    // The failure is printed once (stderr), not also in the progress output's end line.
    expect(text.split('redo only the export with').length - 1, text).toBe(1);
    expect(existsSync(join(out, 'adapter', 'adapter_model.safetensors'))).toBe(true);
    const ends = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type?: string; reason?: string });
    expect(ends.filter((r) => r.type === 'end').pop()?.reason).toBe('failed');
    const report = readFileSync(join(out, 'report.html'), 'utf8');
    expect(report).toMatch(/class="[^"]*status-failed/);
    expect(report).toContain('redo only the export with');

    rmSync(join(out, 'out-q8_0.gguf'), { recursive: true });
    const redo = spawnSync(m![1], { cwd: folder.root, encoding: 'utf8', shell: true });
    expect(redo.status, redo.stdout + redo.stderr).toBe(0);
    expect(existsSync(join(out, 'out-q8_0.gguf'))).toBe(true);
    // the space check made before training counted the tensor data of that file (its header is in the margin)
    const planned = await plannedExportBytes(folder.model, loadConfig(folder.config).config);
    const written = statSync(join(out, 'out-q8_0.gguf')).size;
    expect(planned).toBeGreaterThan(0);
    expect(written - planned).toBeGreaterThanOrEqual(0);
    expect(written - planned).toBeLessThan(64 * 1024 * 1024);
    expect(existsSync(join(out, 'adapter', 'adapter_model.safetensors'))).toBe(true);
  }, 240_000);
});
