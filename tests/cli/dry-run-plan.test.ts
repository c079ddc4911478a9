import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runTrain } from '../../src/cli/train.js';
import { packageRoot } from '../../src/config/paths.js';
import { CheckpointError } from '../../src/errors.js';
import { makeTrainFolder } from './train-fixture.js';

/**
 * `node train.js --dry-run` plans what the run allocates: for the same config on the same device,
 * the dry-run's memory plan (table and checkPlan's note) is the real run's, byte for byte. The real
 * run is stopped right after its plan by a corrupt model file (nothing is trained).
 */
describe('node train.js --dry-run: the same memory plan as the run', () => {
  afterEach(() => vi.restoreAllMocks());

  const planOf = (lines: readonly string[]): { table: string; note: string; dispatches: string } => {
    const start = lines.findIndex((l) => l.startsWith('memory plan: batch'));
    expect(start, lines.join('\n')).toBeGreaterThanOrEqual(0);
    const table = lines[start];
    const note = lines.slice(start).find((l) => /^memory plan: [\d.]+ \w?i?B/.test(l));
    expect(note, lines.join('\n')).toBeDefined();
    // The dispatch counts per micro-batch and per optimiser step, right under the plan's first line.
    const dispatches = lines[start + 1];
    expect(dispatches, lines.join('\n')).toMatch(/^ {2}\d+ dispatches per micro-batch \(forward \d+, loss head \d+, backward \d+, running sums 2\), \d+ per optimiser step$/);
    return { table, note: note!, dispatches };
  };

  it('--gpu-robustness opens the device with Dawn\'s robustness on and says so; without it the device line does not', async () => {
    const folder = makeTrainFolder('gpu-robustness', {}, { corrupt: true });
    for (const flag of [true, false]) {
      const printed: string[] = [];
      vi.spyOn(console, 'log').mockImplementation((line: unknown) => void printed.push(...String(line).split('\n')));
      await expect(runTrain(['--config', folder.config, ...(flag ? ['--gpu-robustness'] : []), ...(flag ? [] : ['--overwrite'])])).rejects.toThrow(CheckpointError);
      vi.restoreAllMocks();
      const device = printed.find((l) => l.startsWith('device: '));
      expect(device, printed.join('\n')).toBeDefined();
      expect(device!.endsWith('; Dawn robustness on (--gpu-robustness)')).toBe(flag);
    }
  }, 120_000);

  for (const checkpointing of [true, 1] as const) {
    it(`gradient_checkpointing: ${checkpointing}`, async () => {
      const folder = makeTrainFolder(`dry-plan-${checkpointing}`, { gradient_checkpointing: checkpointing, lora_dropout: 0.1 }, { corrupt: true });
      const dry = execFileSync(process.execPath, [join(packageRoot(), 'train.js'), '--config', folder.config, '--dry-run'], { encoding: 'utf8' });
      const printed: string[] = [];
      vi.spyOn(console, 'log').mockImplementation((line: unknown) => void printed.push(...String(line).split('\n')));
      await expect(runTrain(['--config', folder.config])).rejects.toThrow(CheckpointError);
      const real = planOf(printed);
      const dryPlan = planOf(dry.split('\n'));
      expect(dryPlan.table).toBe(real.table);
      expect(dryPlan.note).toBe(real.note);
      expect(dryPlan.dispatches).toBe(real.dispatches);
      const total = /total\s+([\d.]+ \w+)/.exec(real.table.split('\n').join(' ')) ?? /memory plan: ([\d.]+ \w+)/.exec(real.note);
      expect(total).not.toBeNull();
      expect(dry).toContain(real.note);
    }, 120_000);
  }
});
