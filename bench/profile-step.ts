/**
 * Where a training step's time goes, kernel by kernel, on the embedded default model (or any
 * config.json with random weights):
 *   node dist/bench/profile-step.js [--config FILE.json] [--batch 8] [--seq 192] [--eval-batch 8] [--reps 2]
 *        [--r 8] [--checkpointing on|off] [--compute auto|float32|float16] [--json FILE]
 * Times one whole micro-batch (forward + backward) and one eval forward, then every dispatch of
 * each on its own (timeDispatches: GPU timestamps where the device has them), summed by kind
 * (the label with layer numbers and row offsets removed). For choosing what to speed up.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { submitDispatches, timeDispatches, type Dispatch } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import { PROJECTIONS } from '../src/model/checkpoint.js';
import { parseQwen3Config } from '../src/model/config.js';
import { embeddedConfig } from '../src/model/embedded.js';
import { createLoraAdapter } from '../src/model/lora-init.js';
import { Qwen3Model } from '../src/model/qwen3.js';
import { RandomQwen3Source } from '../src/model/random-source.js';
import { chooseComputePath } from '../src/model/compute-path.js';
import { createTrainKernels } from '../src/train/kernels.js';
import { Trainer } from '../src/train/trainer.js';

const { values } = parseArgs({
  options: {
    robustness: { type: 'boolean', default: false },
    config: { type: 'string' },
    batch: { type: 'string', default: '8' },
    seq: { type: 'string', default: '192' },
    'eval-batch': { type: 'string', default: '8' },
    reps: { type: 'string', default: '2' },
    r: { type: 'string', default: '8' },
    checkpointing: { type: 'string', default: 'on' },
    compute: { type: 'string', default: 'auto' },
    json: { type: 'string' },
    'no-kernels': { type: 'boolean', default: false },
    /** Time each pipeline's first dispatch before anything else runs (with an empty Mesa cache: its JIT compile). */
    first: { type: 'boolean', default: false },
  },
});
const config = values.config ? parseQwen3Config(JSON.parse(readFileSync(values.config, 'utf8')), values.config) : embeddedConfig();
const B = Number(values.batch);
const T = Number(values.seq);
const evalB = Number(values['eval-batch']);
const reps = Number(values.reps);
const r = Number(values.r);
const checkpointing = values.checkpointing !== 'off';
if (!['float32', 'float16', 'auto'].includes(values.compute!)) throw new Error(`--compute ${values.compute}: expected auto, float32 or float16`);

const gpu = await Gpu.open({ robustness: values.robustness });
console.log(`device: ${gpu.describe()}`);
let t0 = performance.now();
const model = await Qwen3Model.load(gpu, new RandomQwen3Source(config, 1, 0.05), { base: 'nf4' });
const compute = chooseComputePath(gpu, values.compute as 'auto' | 'float32' | 'float16', config).path;
const kernels = await createTrainKernels(gpu, config, model.kernels, { compute, formats: ['nf4'] });
console.log(`compute path: ${compute}, r = ${r}, checkpointing ${checkpointing ? 'on' : 'off'}`);
console.log(`load + compile: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const adapter = createLoraAdapter(gpu, config, { r, alpha: 2 * r, dropout: 0, targetModules: PROJECTIONS, useRslora: false }, 1);
const trainer = await Trainer.create(gpu, model, adapter, { B, T, checkpointing, optimizer: { kind: 'adamw' }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1 }, kernels);
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % config.vocabSize);
const batch = { inputIds: ids, labels: ids, positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T), segmentIds: new Int32Array(B * T) };

if (values.first) {
  // Every distinct pipeline once, in step order: with a cold shader cache the time is its compile.
  const seen = new Map<GPUComputePipeline, string>();
  const list = (trainer.program as unknown as { dispatches: Dispatch[] }).dispatches;
  const rows: [string, number][] = [];
  for (const d of list) {
    if (seen.has(d.pipeline)) continue;
    seen.set(d.pipeline, d.label);
    const t = performance.now();
    submitDispatches(gpu, [d]);
    await gpu.sync();
    rows.push([/\[(.*)\]$/.exec(d.label)?.[1] ?? d.label, (performance.now() - t) / 1000]);
  }
  rows.sort((a, b) => b[1] - a[1]);
  console.log(`first dispatch of ${rows.length} pipelines: ${rows.reduce((a, r) => a + r[1], 0).toFixed(1)} s`);
  for (const [name, s] of rows.slice(0, 25)) console.log(`  ${s.toFixed(2).padStart(7)} s  ${name}`);
}

t0 = performance.now();
trainer.accumulate(batch);
trainer.step(1e-4);
await gpu.sync();
const stepS = (performance.now() - t0) / 1000;
console.log(`train step B=${B} T=${T}: ${stepS.toFixed(2)} s wall (${((B * T) / stepS).toFixed(0)} tokens/s), ${trainer.program.dispatchCount} dispatches`);

const evalProgram = model.program({ B: evalB, T }, trainer.lora);
const evalIds = ids.subarray(0, evalB * T);
t0 = performance.now();
await evalProgram.run({ inputIds: evalIds, labels: evalIds });
const evalS = (performance.now() - t0) / 1000;
console.log(`eval forward B=${evalB} T=${T}: ${evalS.toFixed(2)} s wall, ${evalProgram.dispatchCount} dispatches`);

const report: Record<string, { totalS: number; kinds: { kind: string; s: number; n: number }[] }> = {};
/** Per-kind GPU time of a dispatch list, each dispatch timed alone. */
async function profile(name: string, list: readonly Dispatch[]): Promise<void> {
  const byKind = new Map<string, { s: number; n: number }>();
  let total = 0;
  for (const d of list) {
    const s = await timeDispatches(gpu, [d], reps, 1);
    const kind = d.label.replace(/\(.*$/, '').replace(/\d+/g, '#').trim();
    const e = byKind.get(kind) ?? { s: 0, n: 0 };
    e.s += s;
    e.n++;
    byKind.set(kind, e);
    total += s;
  }
  report[name] = { totalS: total, kinds: [...byKind].map(([kind, e]) => ({ kind, ...e })).sort((a, b) => b.s - a.s) };
  console.log(`\n${name}: Σ of dispatches timed alone ${total.toFixed(2)} s`);
  for (const [kind, e] of [...byKind].sort((a, b) => b[1].s - a[1].s).slice(0, 40)) {
    console.log(`  ${(e.s * 1000).toFixed(0).padStart(8)} ms ${((100 * e.s) / total).toFixed(1).padStart(5)}%  ×${e.n}  ${kind}`);
  }
}
if (!values['no-kernels']) {
  // Private lists, reached for profiling only.
  await profile('train micro-batch', (trainer.program as unknown as { dispatches: Dispatch[] }).dispatches);
  await profile('eval forward', (evalProgram as unknown as { dispatches: Dispatch[] }).dispatches);
}
if (values.json) writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), robustness: gpu.robustness, date: new Date().toISOString(), B, T, r, checkpointing, compute, stepS, evalS, profile: report }, null, 1));
evalProgram.destroy();
trainer.destroy();
gpu.destroy();
