/**
 * The evaluation split: the dataset's own validation split when it has one; otherwise
 * `test_size` of the train rows (a fraction rounded up, as `datasets.train_test_split`, or a row
 * count) chosen by a permutation seeded with `seed`. Deterministic, and described in one line
 * for the log.
 */
import { ConfigError } from '../errors.js';
import { STREAM, mixSeed, permutation } from './shuffle.js';

export interface EvalSplitChoice<T> {
  train: T[];
  eval: T[];
  /** One line for the log, e.g. "eval: the dataset's validation split (60 rows)". */
  description: string;
  source: 'validation split' | 'test_size' | 'none';
}

export interface EvalSplitOptions {
  testSize: number;
  seed: number;
  /** eval_strategy: `no` keeps all train rows for training when the dataset has no validation split. */
  evalStrategy: 'no' | 'steps' | 'epoch';
}

export function chooseEvalSplit<T>(train: readonly T[], validation: readonly T[] | undefined, opts: EvalSplitOptions): EvalSplitChoice<T> {
  if (validation !== undefined && validation.length > 0) {
    return { train: [...train], eval: [...validation], source: 'validation split', description: `eval: the dataset's validation split (${validation.length} rows)` };
  }
  if (opts.evalStrategy === 'no' || opts.testSize === 0) {
    if (opts.evalStrategy !== 'no') {
      throw new ConfigError(`eval_strategy "${opts.evalStrategy}": the dataset has no validation split and test_size is 0; set test_size (e.g. 0.1) or eval_strategy: no.`);
    }
    return { train: [...train], eval: [], source: 'none', description: 'eval: none (eval_strategy no, no validation split)' };
  }
  const nEval = opts.testSize < 1 ? Math.ceil(opts.testSize * train.length) : opts.testSize;
  if (nEval >= train.length) {
    throw new ConfigError(`test_size ${opts.testSize}: would hold out ${nEval} of ${train.length} train rows, leaving none to train on.`);
  }
  const order = permutation(train.length, mixSeed(opts.seed, STREAM.evalSplit));
  const held = new Set(order.slice(0, nEval));
  const pct = opts.testSize < 1 ? `${+(opts.testSize * 100).toFixed(2)}% ` : '';
  return {
    train: train.filter((_, i) => !held.has(i)),
    eval: [...held].sort((a, b) => a - b).map((i) => train[i]),
    source: 'test_size',
    description: `eval: ${pct}of the train split held out (test_size ${opts.testSize}, seed ${opts.seed}): ${nEval} rows`,
  };
}
