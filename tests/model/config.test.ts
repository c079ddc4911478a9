import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError } from '../../src/errors.js';
import { parseQwen3Config, readQwen3Config } from '../../src/model/config.js';

const FIXTURES = join(import.meta.dirname, '../../../shared/fixtures/qwen3-tiny');
const tmp = mkdtempSync(join(tmpdir(), 'config-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Qwen3-4B-Instruct-2507's config.json as transformers 4 wrote it (top-level rope_theta, torch_dtype). */
const QWEN3_4B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 2560,
  initializer_range: 0.02,
  intermediate_size: 9728,
  max_position_embeddings: 262144,
  max_window_layers: 36,
  model_type: 'qwen3',
  num_attention_heads: 32,
  num_hidden_layers: 36,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 5000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.51.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const WHERE = '/models/qwen3/config.json';

function refused(json: unknown, ...fragments: string[]): void {
  let err: unknown;
  try {
    parseQwen3Config(json, WHERE);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CheckpointError);
  const msg = (err as Error).message;
  expect(msg.startsWith(WHERE)).toBe(true);
  for (const f of fragments) expect(msg).toContain(f);
}

describe('config.json parsing', () => {
  it('parses the transformers-4 style Qwen3-4B config (top-level rope_theta)', () => {
    const c = parseQwen3Config(QWEN3_4B, WHERE);
    expect(c).toMatchObject({
      hiddenSize: 2560,
      intermediateSize: 9728,
      numHiddenLayers: 36,
      numAttentionHeads: 32,
      numKeyValueHeads: 8,
      headDim: 128,
      vocabSize: 151936,
      rmsNormEps: 1e-6,
      ropeTheta: 5e6,
      tieWordEmbeddings: true,
      maxPositionEmbeddings: 262144,
      torchDtype: 'bfloat16',
      bosTokenId: 151643,
      eosTokenIds: [151645],
      padTokenId: null,
    });
    expect(Object.isFrozen(c)).toBe(true);
    expect(c.raw.transformers_version).toBe('4.51.0');
    expect(Object.isFrozen(c.raw.architectures)).toBe(true);
  });

  it('parses the transformers-5 style fixture config (rope_parameters, dtype)', async () => {
    const c = await readQwen3Config(join(FIXTURES, 'model'));
    expect(c).toMatchObject({
      hiddenSize: 32,
      intermediateSize: 96,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 16,
      vocabSize: 151936,
      ropeTheta: 1e6,
      tieWordEmbeddings: true,
      torchDtype: 'bfloat16',
      bosTokenId: null,
      eosTokenIds: [],
    });
    expect(c.raw.rope_parameters).toEqual({ rope_theta: 1e6, rope_type: 'default' });
  });

  it('applies transformers defaults: head_dim = hidden / heads, kv heads = heads, untied', () => {
    const json: Record<string, unknown> = { ...QWEN3_4B, eos_token_id: [1, 2] };
    delete json.head_dim;
    delete json.num_key_value_heads;
    delete json.tie_word_embeddings;
    const c = parseQwen3Config(json, WHERE);
    expect(c.headDim).toBe(80);
    expect(c.numKeyValueHeads).toBe(32);
    expect(c.tieWordEmbeddings).toBe(false);
    expect(c.eosTokenIds).toEqual([1, 2]);
  });

  it('accepts rope_scaling with rope_type "default" and agreeing rope_theta in both places', () => {
    const c = parseQwen3Config({ ...QWEN3_4B, rope_scaling: { rope_type: 'default' }, rope_parameters: { rope_theta: 5e6, rope_type: 'default' } }, WHERE);
    expect(c.ropeTheta).toBe(5e6);
  });
});

describe('config.json refusals', () => {
  it('another architecture or model type', () => {
    refused({ ...QWEN3_4B, model_type: 'llama' }, 'key "model_type" is "llama"', 'supported: "qwen3"');
    refused({ ...QWEN3_4B, architectures: ['Qwen3MoeForCausalLM'] }, 'key "architectures" is ["Qwen3MoeForCausalLM"]', 'supported: ["Qwen3ForCausalLM"]');
    refused([1, 2], 'must hold a JSON object');
  });

  it('RoPE scaling', () => {
    refused({ ...QWEN3_4B, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'key "rope_scaling" is {"rope_type":"yarn","factor":4}', 'rope_type "default"');
    refused({ ...QWEN3_4B, rope_scaling: { type: 'linear', factor: 2 } }, 'key "rope_scaling"', 'no RoPE scaling');
    const t5: Record<string, unknown> = { ...QWEN3_4B, rope_parameters: { rope_theta: 5e6, rope_type: 'yarn' } };
    delete t5.rope_theta;
    refused(t5, 'key "rope_parameters" is {"rope_theta":5000000,"rope_type":"yarn"}');
  });

  it('attention bias, sliding windows, other activations, pre-quantised checkpoints', () => {
    refused({ ...QWEN3_4B, attention_bias: true }, 'key "attention_bias" is true', 'supported: false');
    refused({ ...QWEN3_4B, use_sliding_window: true, sliding_window: 4096 }, 'key "use_sliding_window" is true', 'full causal attention');
    refused({ ...QWEN3_4B, layer_types: ['full_attention', 'sliding_attention'] }, 'key "layer_types[1]" is "sliding_attention"');
    refused({ ...QWEN3_4B, hidden_act: 'gelu' }, 'key "hidden_act" is "gelu"', '"silu"');
    refused({ ...QWEN3_4B, quantization_config: { quant_method: 'awq' } }, 'key "quantization_config"', 'unquantised');
  });

  it('missing or mistyped keys name the key, what was found and what is expected', () => {
    const noHidden: Record<string, unknown> = { ...QWEN3_4B };
    delete noHidden.hidden_size;
    refused(noHidden, 'key "hidden_size" is missing; expected a positive integer');
    refused({ ...QWEN3_4B, num_hidden_layers: '36' }, 'key "num_hidden_layers" is "36"; expected a positive integer');
    refused({ ...QWEN3_4B, rms_norm_eps: -1 }, 'key "rms_norm_eps" is -1; expected a positive number');
    refused({ ...QWEN3_4B, rope_parameters: { rope_theta: 'big' } }, 'key "rope_parameters.rope_theta" is "big"');
    const noTheta: Record<string, unknown> = { ...QWEN3_4B };
    delete noTheta.rope_theta;
    refused(noTheta, 'expected "rope_theta" (transformers 4) or "rope_parameters.rope_theta" (transformers 5), found neither');
    refused({ ...QWEN3_4B, rope_parameters: { rope_theta: 1e6 } }, '"rope_theta" is 5000000 but "rope_parameters.rope_theta" is 1000000');
  });

  it('heads must divide evenly', () => {
    refused({ ...QWEN3_4B, num_key_value_heads: 7 }, 'num_attention_heads 32 is not a multiple of num_key_value_heads 7');
    const json: Record<string, unknown> = { ...QWEN3_4B, hidden_size: 2570 };
    delete json.head_dim;
    refused(json, '"head_dim" is absent and hidden_size 2570 is not a multiple of num_attention_heads 32');
  });

  it('an unreadable or invalid config.json file names the file', async () => {
    const dir = join(tmp, 'bad');
    await expect(readQwen3Config(dir)).rejects.toThrow(/bad\/config\.json: cannot read/);
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), '{"model_type": "qwen3",');
    await expect(readQwen3Config(dir)).rejects.toThrow(/bad\/config\.json: not valid JSON/);
  });
});
