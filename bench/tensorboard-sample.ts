import { TensorBoardObserver } from '../src/report/tensorboard-observer.js';

/**
 * Writes a synthetic run's TensorBoard event file (20 logged steps, evaluations at 10 and 20) with
 * the trainer's own writer, for bench/tensorboard-check.py to read with TensorBoard itself:
 *
 *   npm run build && node dist/bench/tensorboard-sample.js OUTPUT_DIR
 *   python3 bench/tensorboard-check.py OUTPUT_DIR/runs --steps 20 --evals 2
 */
const out = process.argv[2];
if (!out) {
  console.error('usage: node dist/bench/tensorboard-sample.js OUTPUT_DIR');
  process.exit(2);
}
const tb = new TensorBoardObserver(out, { hyperparameters: { model_id: 'synthetic', learning_rate: 2e-4 } });
await tb.onStart({ totalSteps: 20, stepsPerEpoch: 10, startStep: 0, batch: 2, seqLength: 64, gradientAccumulation: 1, warmupSteps: 2, plannedGpuBytes: 0, outputDir: out });
for (let step = 1; step <= 20; step++) {
  await tb.onStep({ step, totalSteps: 20, epoch: step / 10, loss: 3 / (1 + step / 5), learningRate: 2e-4 * (1 - step / 20), gradNorm: 1, tokensPerSecond: 100, plannedGpuBytes: 0, elapsedSeconds: step, etaSeconds: 20 - step, tokenAccuracy: step / 40 });
  if (step % 10 === 0) await tb.onEval({ step, epoch: step / 10, evalLoss: 3 / (1 + step / 6), isBest: true, bestStep: step, bestEvalLoss: 1, badEvaluations: 0, seconds: 1 });
}
await tb.onEnd({ steps: 20, reason: 'completed', elapsedSeconds: 20 });
console.log(tb.logDir);
