import { beforeAll, describe, expect, it } from 'vitest';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { expectRelNorm } from '../helpers/compare.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The forward pass against ../shared/fixtures/qwen3-tiny (transformers + PEFT; base.* in float64).
 * Criterion from the fixture README: ‖out − ref‖ / ‖ref‖ ≤ 1e-4 for an f32 GPU implementation.
 */
const TOL = 1e-4;

describe('qwen3-tiny forward matches transformers', () => {
  let ref: Awaited<ReturnType<typeof readReference>>;
  let B: number;
  let T: number;
  let inputIds: Int32Array;
  let labels: Int32Array;
  const get = (name: string): Float32Array => {
    const t = ref.get(name);
    if (!t) throw new Error(`reference.safetensors has no ${name}`);
    return t.data;
  };

  beforeAll(async () => {
    ref = await readReference();
    [B, T] = ref.get('input_ids')!.shape;
    inputIds = ref.get('input_ids')!.i32!;
    labels = ref.get('labels')!.i32!;
  });

  it('full-precision base: layer outputs, final norm, logits, log-probs and loss', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
    const r = await model.forward({ B, T, inputIds, labels }, { logitsLast: true, captureLayers: true });
    for (let l = 0; l < model.config.numHiddenLayers; l++) expectRelNorm(`base.layer_out.${l}`, r.layerOut![l], get(`base.layer_out.${l}`), TOL);
    expectRelNorm('base.final_norm', r.finalNorm!, get('base.final_norm'), TOL);
    expectRelNorm('base.logits_last', r.logitsLast!, get('base.logits_last'), TOL);
    expectRelNorm('base.loss', [r.loss], get('base.loss'), TOL);
    // logprob_next[b, t] = log p(input_ids[b, t+1] | ≤ t): the per-position loss with labels = input_ids, negated.
    const all = await model.forward({ B, T, inputIds, labels: inputIds }, { captureLayers: true });
    const logprob = new Float32Array(B * (T - 1));
    for (let b = 0; b < B; b++) for (let t = 0; t + 1 < T; t++) logprob[b * (T - 1) + t] = -all.tokenLoss![b * T + t];
    expectRelNorm('base.logprob_next', logprob, get('base.logprob_next'), TOL);
  });

  it('full-precision base + fixture adapter: loss and logits_last (lora_bf16.*)', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'full' });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const r = await model.forward({ B, T, inputIds, labels }, { adapter, logitsLast: true });
    expectRelNorm('lora_bf16.loss', [r.loss], get('lora_bf16.loss'), TOL);
    expectRelNorm('lora_bf16.logits_last', r.logitsLast!, get('lora_bf16.logits_last'), TOL);
  });

  it('NF4 base + fixture adapter: loss and logits_last (lora_nf4.*)', async () => {
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    expect(model.weights.layers[0].proj.q_proj.format).toBe('nf4');
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const r = await model.forward({ B, T, inputIds, labels }, { adapter, logitsLast: true });
    expectRelNorm('lora_nf4.loss', [r.loss], get('lora_nf4.loss'), TOL);
    expectRelNorm('lora_nf4.logits_last', r.logitsLast!, get('lora_nf4.logits_last'), TOL);
    // The NF4 base really differs from the full one: its loss must not equal lora_bf16's.
    expect(Math.abs(r.loss - get('lora_bf16.loss')[0])).toBeGreaterThan(1e-6);
  });
});
