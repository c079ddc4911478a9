import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseQwen3Config, type Qwen3Config } from './config.js';
import { RandomQwen3Source } from './random-source.js';
import { bundledQwen3TokenizerDir } from './tokenizer.js';
import { writeCheckpoint } from './write-checkpoint.js';

/**
 * The project's own small model, for the embedded default run (`node train.js` with no
 * arguments) on any machine, lavapipe included: the Qwen3 architecture at toy width with the real
 * Qwen3 vocabulary and tokenizer, weights made deterministically from a fixed seed.
 */
export const EMBEDDED_MODEL_ID = 'embedded:qwen3-tiny';
const EMBEDDED_SEED = 20261125;

export const EMBEDDED_CONFIG_JSON = Object.freeze({
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 64,
  intermediate_size: 192,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 151936,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  max_position_embeddings: 4096,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  attention_bias: false,
  torch_dtype: 'bfloat16',
  bos_token_id: 151643,
  eos_token_id: 151645,
});

export function embeddedConfig(): Qwen3Config {
  return parseQwen3Config(EMBEDDED_CONFIG_JSON, EMBEDDED_MODEL_ID);
}

/** Creates the embedded model folder under `root` if it is not there yet; returns its path. */
export async function materializeEmbeddedModel(root: string): Promise<string> {
  const dir = join(root, 'qwen3-tiny');
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  const tok = bundledQwen3TokenizerDir();
  await writeCheckpoint(new RandomQwen3Source(embeddedConfig(), EMBEDDED_SEED, 0.05), dir, {
    'tokenizer.json': join(tok, 'tokenizer.json'),
    'tokenizer_config.json': join(tok, 'tokenizer_config.json'),
  });
  return dir;
}
