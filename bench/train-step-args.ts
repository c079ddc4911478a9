/**
 * The checkpointing flags of bench/train-step.ts: `--checkpointing` as a comma list of on, off and
 * auto (both = on,off), and `--max-memory`, the budget of auto, parsed as the config's max_memory
 * (maxMemoryBytes: a number of GiB or a size such as 24GiB).
 */
import { ConfigError } from '../src/errors.js';
import { maxMemoryBytes } from '../src/train/auto-recompute.js';

/** One checkpointing setting of the bench: every layer recomputed, none, or the trainer's auto rule. */
export type CheckpointingMode = 'on' | 'off' | 'auto';

const MODES: readonly string[] = ['on', 'off', 'auto'];

/** `--checkpointing` as its settings in the order given, each once; `both` stands for on,off. */
export function parseCheckpointingModes(arg: string): CheckpointingMode[] {
  const modes: CheckpointingMode[] = [];
  for (const raw of arg.split(',')) {
    const item = raw.trim();
    const expanded = item === 'both' ? ['on', 'off'] : [item];
    for (const m of expanded) {
      if (!MODES.includes(m)) {
        throw new ConfigError(`--checkpointing ${arg}: '${item}' is not a setting; expected a comma list of on, off, auto (both = on,off), e.g. on,off,auto`);
      }
      if (!modes.includes(m as CheckpointingMode)) modes.push(m as CheckpointingMode);
    }
  }
  return modes;
}

/** `--max-memory` for maxMemoryBytes: a bare number is GiB, as in the config; absent → null. */
export function maxMemoryArg(arg: string | undefined): number | string | null {
  if (arg === undefined) return null;
  const value = /^\s*\d+(?:\.\d+)?\s*$/.test(arg) ? Number(arg) : arg;
  // Parsed here so that a wrong size fails before the model is built, naming the flag.
  const bytes = maxMemoryBytes(value, '--max-memory')!;
  if (!(bytes > 0)) throw new ConfigError(`--max-memory ${arg}: expected a size above 0, such as 24GiB`);
  return value;
}
