/**
 * What the embedded default's run and report say about its sample generations: the embedded model
 * has random weights (the project creates it; nothing is downloaded), so its samples are noise by
 * design, and the run shows that the pipeline works, not what a fine-tune learns.
 */
import { bundledConfigPath, trainCommand } from '../config/command-line.js';

/** The command for a real fine-tune (the v7 config, Qwen3-4B), runnable as printed from `cwd`. */
export function realFineTuneCommand(cwd: string = process.cwd()): string {
  return trainCommand(['--config', bundledConfigPath('qwen3-4b-deforum-v7.yaml', cwd)], cwd);
}

/** The notice's lines, its command runnable from `cwd`. */
export function embeddedNotice(cwd: string = process.cwd()): string[] {
  return [
    'note: this run used the embedded model, which has random weights: its sample generations are noise by design.',
    'It checks that the pipeline works end to end (data, training, evaluation, checkpoints, export), not what a fine-tune learns.',
    `For a real fine-tune (Qwen3-4B-Instruct, the v7 config) on a GPU: ${realFineTuneCommand(cwd)}`,
  ];
}
