import { join } from 'node:path';
import { parseQwen3Config, type Qwen3Config } from './config.js';
import { materializeRandomModel } from './random-model.js';

/**
 * The project's own small model, for the embedded default run (`node train.js` with no
 * arguments) on any machine, lavapipe included: the Qwen3 architecture at toy width with the real
 * Qwen3 vocabulary and tokenizer, weights made deterministically from a fixed seed.
 *
 * Scales: matrices std 0.05; the tied embedding std 0.2, so that a logit xf·E_v (‖xf‖ = √D = 8
 * after the final norm) can reach ≈ ±13 and a LoRA-only fine-tune has room to lower the loss (at
 * std 0.05 the logits stay within ±3.2 and the loss cannot fall far below ln V ≈ 11.9). The first
 * loss is ≈ 13.4 nats (the tied embedding makes the model echo its input token); 24 steps of the
 * embedded default bring it to ≈ 11.8.
 */
export const EMBEDDED_MODEL_ID = 'embedded:qwen3-tiny';
const EMBEDDED_SEED = 20261125;
const EMBEDDED_STD = 0.05;
const EMBEDDED_EMBED_STD = 0.2;

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

/**
 * Creates the embedded model folder under `root` (model.safetensors, config.json, the bundled
 * tokenizer) if it is not there yet with this recipe; returns its path.
 */
export async function materializeEmbeddedModel(root: string): Promise<string> {
  const made = await materializeRandomModel({ ...EMBEDDED_CONFIG_JSON }, join(root, 'qwen3-tiny'), {
    seed: EMBEDDED_SEED,
    std: EMBEDDED_STD,
    embedStd: EMBEDDED_EMBED_STD,
  });
  return made.dir;
}
