/**
 * Loading and forward-pass benchmark at a real model's shapes with random weights (no download):
 *   node dist/bench/forward.js [--config configs/models/qwen3-4b.json] [--base nf4|full]
 *        [--double-quant] [--batch 4] [--seq 512] [--r 32] [--reps 3] [--json FILE]
 * Reports load time, peak host memory (RSS) while streaming the weights in, GPU bytes of the
 * weights, and forward tokens/s with a LoRA adapter on all seven projections.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Gpu } from '../src/kernels/gpu.js';
import { parseQwen3Config } from '../src/model/config.js';
import { PROJECTIONS } from '../src/model/checkpoint.js';
import { createLoraAdapter } from '../src/model/lora-init.js';
import { Qwen3Model } from '../src/model/qwen3.js';
import { RandomQwen3Source } from '../src/model/random-source.js';

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: 'configs/models/qwen3-4b.json' },
    base: { type: 'string', default: 'nf4' },
    'double-quant': { type: 'boolean', default: false },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '512' },
    r: { type: 'string', default: '32' },
    reps: { type: 'string', default: '3' },
    json: { type: 'string' },
  },
});
const config = parseQwen3Config(JSON.parse(readFileSync(values.config!, 'utf8')), values.config!);
const B = Number(values.batch);
const T = Number(values.seq);
const reps = Number(values.reps);
const base = values.base === 'full' ? 'full' : 'nf4';

let peakRss = process.memoryUsage().rss;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
const gpu = await Gpu.open();
console.log(`device: ${gpu.describe()}`);
const rssBefore = process.memoryUsage().rss;
const t0 = performance.now();
const model = await Qwen3Model.load(gpu, new RandomQwen3Source(config, 1), { base, doubleQuant: values['double-quant'] });
const loadS = (performance.now() - t0) / 1000;
clearInterval(sampler);
peakRss = Math.max(peakRss, process.memoryUsage().rss);
console.log(`load: ${loadS.toFixed(1)} s, weights on GPU ${(model.weights.bytes / 2 ** 30).toFixed(2)} GiB, peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB (${((peakRss - rssBefore) / 2 ** 20).toFixed(0)} MiB above the opened device)`);

const adapter = createLoraAdapter(gpu, config, { r: Number(values.r), alpha: 2 * Number(values.r), dropout: 0, targetModules: PROJECTIONS, useRslora: false }, 1);
const program = model.program({ B, T }, adapter);
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % config.vocabSize);
let first = await program.run({ inputIds: ids, labels: ids });
const times: number[] = [];
for (let i = 0; i < reps; i++) {
  const s = performance.now();
  first = await program.run({ inputIds: ids, labels: ids });
  times.push((performance.now() - s) / 1000);
}
times.sort((a, b) => a - b);
const sec = times[Math.floor(times.length / 2)];
const tokS = (B * T) / sec;
console.log(`forward B=${B} T=${T} (${base}${values['double-quant'] ? '+dq' : ''}, LoRA r=${values.r} on all 7): ${(sec * 1000).toFixed(1)} ms, ${tokS.toFixed(0)} tokens/s, ${program.dispatchCount} dispatches, loss ${first.loss.toFixed(4)}`);
if (values.json) {
  writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), config: values.config, base, B, T, loadS, peakRssMiB: peakRss / 2 ** 20, weightsGiB: model.weights.bytes / 2 ** 30, forwardMs: sec * 1000, tokensPerS: tokS }, null, 2));
}
program.destroy();
gpu.destroy();
