import { join } from 'node:path';
import { shownPath } from '../config/command-line.js';
import type { TrainConfig } from '../config/schema.js';

/**
 * The command that redoes only a run's export (after training succeeded and the export failed):
 * `node <bin> export --run <output_dir> --out <output_dir> --force` with the run's export keys as
 * flags. --force: the outputs it replaces are this run's own.
 */
export function redoExportCommand(config: TrainConfig, packageRoot: string, cwd: string = process.cwd()): string {
  const shown = (p: string): string => shownPath(p, cwd);
  const flags: string[] = [];
  if (config.export_gguf !== null) flags.push('--gguf', config.export_gguf);
  if (config.export_lora_gguf) flags.push('--lora-gguf');
  if (config.export_merged) flags.push('--merged');
  if (config.export_modelfile) flags.push('--modelfile');
  const dir = shown(config.output_dir);
  return ['node', shown(join(packageRoot, 'bin', 'prompt-lora.js')), 'export', '--run', dir, '--out', dir, '--force', ...flags].join(' ');
}

