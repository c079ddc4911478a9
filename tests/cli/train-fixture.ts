import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundledQwen3TokenizerDir } from '../../src/model/tokenizer.js';
import { TINY_MODEL } from '../helpers/fixtures.js';

/**
 * A folder for `node train.js` runs in tests: model/ (the fixture model's files linked, plus the
 * bundled Qwen3 tokenizer, whose ids fit the fixture's 151,936-token vocabulary), data/train.jsonl
 * (12 short `text` rows, a dozen tokens each) and cfg.yaml (B = 1, T = 16, no evaluation, LoRA
 * dropout 0.1). On lavapipe a step of this model takes about a second (the lm_head over the full
 * vocabulary); start-up (tokenizer, data, device, load) several seconds.
 */
export interface TrainFolder {
  readonly root: string;
  readonly model: string;
  readonly config: string;
}

/** `corrupt`: model/ gets the fixture's config.json and a model.safetensors of garbage instead of the weights. */
export function makeTrainFolder(tag: string, yaml: Record<string, unknown> = {}, options: { corrupt?: boolean } = {}): TrainFolder {
  const root = mkdtempSync(join(tmpdir(), `plt-cli-${tag}-`));
  const model = join(root, 'model');
  mkdirSync(model);
  mkdirSync(join(root, 'data'));
  symlinkSync(join(TINY_MODEL, 'config.json'), join(model, 'config.json'));
  if (options.corrupt) writeFileSync(join(model, 'model.safetensors'), 'this is not a safetensors file at all, not even its header length');
  else for (const f of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']) symlinkSync(join(TINY_MODEL, f), join(model, f));
  const tok = bundledQwen3TokenizerDir();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(join(tok, f), join(model, f));
  const words = ['red fox', 'blue sea', 'old tree', 'cold rain', 'tall tower', 'quiet room', 'bright sun', 'dark road', 'green hill', 'soft snow', 'loud city', 'slow river'];
  writeFileSync(join(root, 'data', 'train.jsonl'), words.map((w, i) => `${JSON.stringify({ text: `A ${w} at dawn, number ${i}.` })}\n`).join(''));
  const settings: Record<string, unknown> = {
    model_id: './model',
    dataset_id: './data',
    output_dir: join(root, 'out'),
    dataset_format: 'text',
    max_seq_length: 16,
    per_device_train_batch_size: 1,
    gradient_accumulation_steps: 1,
    max_steps: 4,
    learning_rate: 0.01,
    lora_r: 4,
    lora_alpha: 8,
    lora_dropout: 0.1,
    optim: 'adamw_torch',
    eval_strategy: 'no',
    logging_steps: 1,
    save_strategy: 'steps',
    save_steps: 100,
    ...yaml,
  };
  const config = join(root, 'cfg.yaml');
  writeFileSync(config, Object.entries(settings).map(([k, v]) => `${k}: ${JSON.stringify(v)}\n`).join(''));
  return { root, model, config };
}
