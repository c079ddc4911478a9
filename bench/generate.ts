/**
 * Generation benchmark at a real model's shapes with random weights (no download):
 *   node dist/bench/generate.js [--config configs/models/qwen3-4b.json] [--base nf4|full] [--double-quant]
 *        [--r 32] [--prompt-tokens 512] [--new-tokens 128] [--max-context 1024] [--prefill-chunk 128] [--json FILE]
 *        [--compute auto|float32|float16]
 * Reports the prefill (prompt tokens/s), the decode (tokens/s and ms per token, greedy, one token per
 * step: buffer write, one submit, V-logit readback, argmax), the GPU time of one decode step alone
 * (the rest is host: submit, readback, sampling), the host cost of sampling with the Modelfile's
 * settings, and the KV cache size. The adapter is random (LoRA on all seven projections) so that its
 * epilogues run as in a fine-tuned model. --compute picks the prefill's projection path
 * (src/model/compute-path.ts; default auto: tensor cores where the adapter has them); decode stays on
 * the matrix-vector kernel.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Generator } from '../src/generate/generator.js';
import { SamplerRng } from '../src/generate/rng.js';
import { argmax, DEFAULT_SAMPLING, Sampler } from '../src/generate/sampling.js';
import { Gpu } from '../src/kernels/gpu.js';
import { PROJECTIONS } from '../src/model/checkpoint.js';
import { parseQwen3Config } from '../src/model/config.js';
import { createLoraAdapter } from '../src/model/lora-init.js';
import { Qwen3Model } from '../src/model/qwen3.js';
import { chooseComputePath, describeComputePath } from '../src/model/compute-path.js';
import { RandomQwen3Source } from '../src/model/random-source.js';

const { values } = parseArgs({
  options: {
    robustness: { type: 'boolean', default: false },
    config: { type: 'string', default: 'configs/models/qwen3-4b.json' },
    base: { type: 'string', default: 'nf4' },
    'double-quant': { type: 'boolean', default: false },
    r: { type: 'string', default: '32' },
    'prompt-tokens': { type: 'string', default: '512' },
    'new-tokens': { type: 'string', default: '128' },
    'max-context': { type: 'string' },
    'prefill-chunk': { type: 'string', default: '128' },
    json: { type: 'string' },
    compute: { type: 'string', default: 'auto' },
  },
});
const config = parseQwen3Config(JSON.parse(readFileSync(values.config!, 'utf8')), values.config!);
const base = values.base === 'full' ? 'full' : 'nf4';
const promptTokens = Number(values['prompt-tokens']);
const newTokens = Number(values['new-tokens']);
const maxContext = Number(values['max-context'] ?? promptTokens + newTokens);
const r = Number(values.r);

const gpu = await Gpu.open({ robustness: values.robustness });
console.log(`device: ${gpu.describe()}`);
if (!['auto', 'float32', 'float16'].includes(values.compute!)) throw new Error(`--compute ${values.compute}: expected auto, float32 or float16`);
const compute = chooseComputePath(gpu, values.compute as 'auto' | 'float32' | 'float16', config);
console.log(`compute: ${describeComputePath(compute.path)} (${compute.why})`);
let t = performance.now();
const model = await Qwen3Model.load(gpu, new RandomQwen3Source(config, 1), { base, doubleQuant: values['double-quant'], compute: compute.path });
console.log(`load: ${((performance.now() - t) / 1000).toFixed(1)} s (random weights, ${base}), ${(model.weights.bytes / 2 ** 30).toFixed(2)} GiB`);
const adapter = r > 0 ? createLoraAdapter(gpu, config, { r, alpha: 2 * r, dropout: 0, targetModules: PROJECTIONS, useRslora: false }, 1) : undefined;
t = performance.now();
const gen = await Generator.create(gpu, model, { adapter, maxContext, prefillChunk: Number(values['prefill-chunk']) });
console.log(
  `generator: ${((performance.now() - t) / 1000).toFixed(1)} s to build; KV cache ${maxContext} tokens = ${(gen.cache.bytes / 2 ** 20).toFixed(0)} MiB; ` +
    `prefill chunk ${gen.prefillChunk} (${gen.prefillProgram.dispatchCount} dispatches, ${gen.prefillProgram.splits} key splits), ` +
    `decode ${gen.decodeProgram.dispatchCount} dispatches, ${gen.decodeProgram.splits} key splits`,
);

const prompt = Array.from({ length: promptTokens }, (_, i) => (i * 7919 + 13) % config.vocabSize);
await gen.prefill(prompt.slice(0, Math.min(prompt.length, gen.prefillChunk))); // warm-up
t = performance.now();
let logits = await gen.prefill(prompt);
const prefillS = (performance.now() - t) / 1000;
console.log(`prefill: ${promptTokens} tokens in ${(prefillS * 1000).toFixed(1)} ms, ${(promptTokens / prefillS).toFixed(0)} tokens/s`);

const steps: number[] = [];
for (let i = 0; i < newTokens - 1 && gen.length < maxContext; i++) {
  const s = performance.now();
  logits = await gen.append(argmax(logits));
  steps.push(performance.now() - s);
}
const sorted = [...steps].sort((a, b) => a - b);
const medianMs = sorted[Math.floor(sorted.length / 2)];
const decodeTokS = (1000 * steps.length) / steps.reduce((a, b) => a + b, 0);
const gpuMs = (await gen.decodeProgram.timeGpu(10)) * 1000;
console.log(
  `decode: ${steps.length} steps at context ${promptTokens}..${gen.length}: ${decodeTokS.toFixed(1)} tokens/s, median ${medianMs.toFixed(2)} ms/token ` +
    `(GPU alone ${gpuMs.toFixed(2)} ms at context ${gen.length}; the rest is submit + ${(config.vocabSize * 4 / 2 ** 20).toFixed(2)} MiB readback + argmax)`,
);

const sampler = new Sampler(config.vocabSize, DEFAULT_SAMPLING, new SamplerRng(1));
const history = [...prompt];
t = performance.now();
for (let i = 0; i < 20; i++) history.push(sampler.sample(logits, history));
const sampleMs = (performance.now() - t) / 20;
console.log(`sampling on the host (temperature ${DEFAULT_SAMPLING.temperature}, top_k ${DEFAULT_SAMPLING.topK}, top_p ${DEFAULT_SAMPLING.topP}, repeat penalty ${DEFAULT_SAMPLING.repeatPenalty}): ${sampleMs.toFixed(2)} ms/token`);

if (values.json) {
  writeFileSync(
    values.json,
    JSON.stringify(
      {
        device: gpu.describe(), robustness: gpu.robustness, date: new Date().toISOString(), config: values.config, base, compute: compute.path, r, promptTokens, newTokens: steps.length + 1, maxContext,
        prefillChunk: gen.prefillChunk, prefillMs: prefillS * 1000, prefillTokensPerS: promptTokens / prefillS,
        decodeTokensPerS: decodeTokS, decodeMedianMs: medianMs, decodeGpuMs: gpuMs, samplingMs: sampleMs, kvCacheMiB: gen.cache.bytes / 2 ** 20,
      },
      null,
      2,
    ),
  );
}
gen.destroy();
gpu.destroy();
