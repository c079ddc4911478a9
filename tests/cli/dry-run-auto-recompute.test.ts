import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/**
 * `gradient_checkpointing: auto` through the CLI (train --dry-run on the embedded default): without
 * a known budget every layer is recomputed and the run says why; with max_memory the plan keeps
 * every layer when it fits and says so, and the printed plan follows the choice.
 */
const TRAIN_JS = join(import.meta.dirname, '../../train.js');
const run = promisify(execFile);

async function dryRun(...sets: string[]): Promise<string> {
  const { stdout, stderr } = await run(process.execPath, [TRAIN_JS, '--dry-run', ...sets.flatMap((s) => ['--set', s])], { timeout: 120_000 });
  return stdout + stderr;
}

describe('train --dry-run with gradient_checkpointing: auto', () => {
  it('recomputes every layer where the memory is unknown, and keeps them all when max_memory has room', async () => {
    const unknown = await dryRun('gradient_checkpointing=auto');
    expect(unknown).toMatch(/^gradient checkpointing: auto: every layer recomputed — the device does not report its memory; set max_memory/m);
    expect(unknown).toMatch(/checkpointing on/);
    const roomy = await dryRun('gradient_checkpointing=auto', 'max_memory=4GiB');
    expect(roomy).toMatch(/^gradient checkpointing: auto: 0 of \d+ layers recomputed, the fewest whose plan \(.*\) fits .* of max_memory 4\.0 GiB/m);
    expect(roomy).toMatch(/checkpointing off/);
    const tight = await dryRun('gradient_checkpointing=auto', 'max_memory=2.1GiB');
    expect(tight).toMatch(/^gradient checkpointing: auto: every layer recomputed, and the plan is still over/m);
  }, 300_000);
});
