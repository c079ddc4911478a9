/**
 * Issue 11 item 7: does training on tensor cores follow the f32 path's loss curve?
 *   node dist/bench/loss-curve-compare.js --out DIR [--config configs/qwen3-4b-deforum-v7.yaml]
 *        [--steps 200] [--eval-steps 40] [--tolerance 0.02] [--set key=value ...]
 *        [--allow-same-path] [--compare-only]
 * Trains the config twice on the embedded model (compute_dtype float32, then float16), compares
 * the eval losses at every evaluation and writes DIR/loss-curve-compare.{json,md}. What is taken
 * from the config and what is changed: bench/loss-curve/run-settings.ts; the rest:
 * bench/loss-curve/compare-command.ts.
 */
import { TrainerError } from '../src/errors.js';
import { runLossCurveCompare } from './loss-curve/compare-command.js';

try {
  process.exitCode = await runLossCurveCompare(process.argv.slice(2));
} catch (e) {
  console.error(`loss-curve-compare: ${(e as Error).message}`);
  process.exitCode = e instanceof TrainerError ? e.exitCode : 1;
}
