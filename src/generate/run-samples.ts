import type { TrainConfig } from '../config/schema.js';
import type { Gpu } from '../kernels/gpu.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Qwen3Model } from '../model/qwen3.js';
import type { QwenTokenizer } from '../model/tokenizer.js';
import type { SampleRecord } from '../train/events.js';
import { Generator } from './generator.js';
import { userTurn } from './prompt.js';

/**
 * Sample generations during training, for the report: at each evaluation the model (base + the
 * live adapter, read in place from the trainer's parameter buffer) answers a fixed set of prompts,
 * rendered as training renders a bare instruction (system prompt, user prefix, chat template).
 * Sampling uses the Modelfile's settings with a fixed seed, so the samples of two evaluations differ
 * only through the adapter. The Generator (KV cache, two programs) is built once and reused.
 */
export interface RunSampler {
  readonly sample: (step: number) => Promise<SampleRecord[]>;
  destroy(): void;
}

export async function createRunSampler(
  gpu: Gpu,
  model: Qwen3Model,
  adapter: LoraAdapter,
  tokenizer: QwenTokenizer,
  config: TrainConfig,
): Promise<RunSampler | undefined> {
  const prompts = config.sample_prompts;
  if (prompts.length === 0 || config.sample_max_new_tokens === 0) return undefined;
  const generator = await Generator.create(gpu, model, {
    adapter,
    tokenizer,
    maxContext: Math.min(model.config.maxPositionEmbeddings, config.max_seq_length + config.sample_max_new_tokens),
  });
  const sample = async (step: number): Promise<SampleRecord[]> => {
    const out: SampleRecord[] = [];
    for (const prompt of prompts) {
      const r = await generator.generate(
        { messages: [userTurn(prompt, config.user_prefix ?? '')] },
        { systemPrompt: config.system_prompt, enableThinking: config.enable_thinking, maxNewTokens: config.sample_max_new_tokens, seed: config.seed },
      );
      out.push({ step, prompt, output: r.text });
    }
    return out;
  };
  return { sample, destroy: () => generator.destroy() };
}
