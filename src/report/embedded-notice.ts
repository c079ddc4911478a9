/**
 * What the embedded default's run and report say about its sample generations: the embedded model
 * has random weights (the project creates it; nothing is downloaded), so its samples are noise by
 * design, and the run shows that the pipeline works, not what a fine-tune learns.
 */
export const REAL_FINE_TUNE_COMMAND = 'node train.js --config configs/qwen3-4b-deforum-v7.yaml';

export const EMBEDDED_NOTICE: readonly string[] = [
  'note: this run used the embedded model, which has random weights: its sample generations are noise by design.',
  'It checks that the pipeline works end to end (data, training, evaluation, checkpoints, export), not what a fine-tune learns.',
  `For a real fine-tune (Qwen3-4B-Instruct, the v7 config) on a GPU: ${REAL_FINE_TUNE_COMMAND}`,
];
