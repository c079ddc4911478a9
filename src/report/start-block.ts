import type { RunObserver, RunStart } from '../train/events.js';
import { runRows, type RunDescription } from './run-description.js';

/**
 * The start-of-run block: one paste-able block (model, data, LoRA, learning rate, effective batch in
 * tokens per optimiser step, steps per epoch and in total, optimiser, precision, compute path,
 * device, memory plan), printed when the loop sends RunStart, so its step counts are the loop's own.
 */
export function formatStartBlock(d: RunDescription, start: RunStart): string {
  const rows = runRows(d, start);
  const width = Math.max(...rows.map(([k]) => k.length));
  const rule = '─'.repeat(72);
  return [`── run ${rule.slice(7)}`, ...rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`), rule].join('\n');
}

export class StartBlockObserver implements RunObserver {
  constructor(
    private readonly description: RunDescription,
    private readonly log: (line: string) => void,
  ) {}

  onStart(start: RunStart): void {
    this.log(formatStartBlock(this.description, start));
  }
}
