import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, loadConfig, resolveConfig } from '../../src/config/load.js';
import { parseConfigArgs } from '../../src/config/args.js';
import { CONFIG_KEYS, DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { bundledDatasetDir, packageRoot } from '../../src/config/paths.js';
import { nearest } from '../../src/config/nearest.js';
import { ConfigError } from '../../src/errors.js';

const CONFIGS = join(packageRoot(), 'configs');

/** The keys the seed's configs use (docs/seed.md), each of which must be accepted. */
const SEED_KEYS = [
  'model_id', 'dataset_id', 'dataset_text_field', 'max_seq_length', 'lora_r', 'lora_alpha', 'lora_dropout', 'lora_target_modules',
  'use_4bit', 'use_8bit', 'bnb_4bit_compute_dtype', 'bnb_4bit_quant_type', 'bnb_4bit_use_double_quant', 'num_train_epochs',
  'per_device_train_batch_size', 'gradient_accumulation_steps', 'learning_rate', 'warmup_ratio', 'lr_scheduler_type',
  'lr_scheduler_kwargs', 'weight_decay', 'optim', 'fp16', 'bf16', 'gradient_checkpointing', 'auto_find_batch_size',
  'group_by_length', 'packing', 'output_dir', 'logging_steps', 'save_steps', 'save_strategy', 'push_to_hub', 'hub_model_id',
  'report_to', 'run_name', 'wandb_project', 'eval_strategy', 'eval_steps', 'load_best_model_at_end', 'metric_for_best_model',
  'greater_is_better', 'early_stopping_patience', 'early_stopping_threshold', 'preprocessing',
];

function yamlFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const p = join(dir, 'c.yaml');
  writeFileSync(p, text);
  return p;
}

function problems(raw: Record<string, unknown>, set: string[] = []): string {
  try {
    resolveConfig(raw, 'c.yaml', { set });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('accepts every key of the seed configs and has one frozen default object', () => {
    for (const k of SEED_KEYS) expect(CONFIG_KEYS).toContain(k);
    const c = defaultConfig();
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.lora_target_modules)).toBe(true);
    expect(c).toMatchObject({
      model_id: 'Qwen/Qwen3-4B-Instruct-2507',
      dataset_id: bundledDatasetDir(),
      max_seq_length: 512,
      lora_r: 16,
      lora_alpha: 32,
      lora_dropout: 0.05,
      lora_target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      learning_rate: 2e-4,
      test_size: 0.1,
      seed: 42,
      eval_steps: 10, // = logging_steps when unset
      report_to: [],
      user_prefix: DEFAULT_USER_PREFIX,
      completion_only_loss: true,
      enable_thinking: false,
    });
    expect(() => {
      (c as { lora_r: number }).lora_r = 4;
    }).toThrow(TypeError);
  });

  it('loads the shipped v2 and v7 configs with the seed values', () => {
    const v2 = loadConfig(join(CONFIGS, 'qwen3-4b-deforum-v2.yaml'));
    expect(v2.config).toMatchObject({
      max_seq_length: 512, lora_r: 16, lora_alpha: 32, packing: true, num_train_epochs: 3, per_device_train_batch_size: 2,
      gradient_accumulation_steps: 8, learning_rate: 2e-4, warmup_ratio: 0.03, lr_scheduler_type: 'cosine', eval_strategy: 'steps',
      eval_steps: 50, save_steps: 50, load_best_model_at_end: true, early_stopping_patience: 3, early_stopping_threshold: 0.001,
      gradient_checkpointing: true, // the seed's, kept explicit (the default where absent is auto)
      dataset_id: bundledDatasetDir(), // ../data/cinematic-prompts, relative to the config file
    });
    const v7 = loadConfig(join(CONFIGS, 'qwen3-4b-deforum-v7.yaml'));
    expect(v7.config).toMatchObject({
      max_seq_length: 384, lora_r: 32, lora_alpha: 64, packing: false, group_by_length: true, num_train_epochs: 5,
      per_device_train_batch_size: 4, gradient_accumulation_steps: 2, learning_rate: 1e-4, warmup_ratio: 0.05, weight_decay: 0.01,
      lr_scheduler_type: 'cosine_with_min_lr', lr_scheduler_kwargs: { min_lr: 1e-6 }, bnb_4bit_use_double_quant: true,
      eval_strategy: 'epoch', save_strategy: 'epoch', gradient_checkpointing: true,
      lora_target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    });
    expect(v7.warnings).toEqual(['optim paged_adamw_8bit: runs unpaged (its states stay in GPU memory, counted in the memory plan; paging to host memory is a bitsandbytes CUDA feature).']);
  });

  it('names the nearest valid key for an unknown key', () => {
    expect(problems({ learning_rat: 1e-4 })).toBe("c.yaml: unknown key 'learning_rat'; did you mean 'learning_rate'?");
    expect(problems({ lora_rank: 8 })).toMatch(/did you mean 'lora_r'\?/);
    expect(problems({ lr_scheduler_kwargs: { min_learning_rate: 1 } })).toMatch(/'lr_scheduler_kwargs.min_learning_rate'; did you mean 'lr_scheduler_kwargs.min_lr_rate'/);
    expect(problems({}, ['warmup=0.1'])).toMatch(/--set warmup=0.1: unknown key 'warmup'; did you mean 'warmup_ratio'/);
    expect(nearest('q', ['q_proj', 'k_proj'])).toBe('q_proj');
  });

  it('names the key and the allowed range for invalid values, all at once', () => {
    expect(problems({ learning_rate: 0 })).toBe('c.yaml: learning_rate: learning_rate must be > 0, found 0');
    expect(problems({ lora_r: 0 })).toMatch(/lora_r: lora_r must be ≥ 1, found 0/);
    expect(problems({ lora_r: 2.5 })).toMatch(/lora_r must be a whole number/);
    expect(problems({ lora_dropout: 1 })).toMatch(/lora_dropout must be in \[0, 1\)/);
    expect(problems({ optim: 'adamw_9bit' })).toMatch(/optim: must be one of .*found "adamw_9bit"; did you mean "adamw_8bit"\?/);
    expect(problems({ packing: 'yes' })).toMatch(/packing: expected boolean, found "yes"/);
    expect(problems({ lora_target_modules: ['q', 'vproj'] })).toMatch(/unknown module 'q'; did you mean 'q_proj'[\s\S]*unknown module 'vproj'; did you mean 'v_proj'/);
    const many = problems({ learning_rate: -1, warmup_ratio: 2 });
    expect(many).toMatch(/learning_rate[\s\S]*warmup_ratio must be in \[0, 1\]/);
    expect(problems({ lr_scheduler_type: 'cosine_with_min_lr' })).toMatch(/cosine_with_min_lr needs min_lr/);
    expect(problems({ load_best_model_at_end: true, eval_strategy: 'no' })).toMatch(/load_best_model_at_end: needs eval_strategy "steps" or "epoch"/);
    expect(problems({ load_best_model_at_end: true, eval_strategy: 'epoch', save_strategy: 'steps' })).toMatch(/save_strategy \("steps"\) must equal eval_strategy \("epoch"\)/);
    expect(problems({ early_stopping_patience: 3, eval_strategy: 'no' })).toMatch(/early_stopping_patience: needs eval_strategy/);
    expect(problems({ use_4bit: true, use_8bit: true })).toMatch(/use_4bit and use_8bit: both true/);
    expect(problems({ test_size: 1.5 })).toMatch(/test_size: must be a fraction in \[0, 1\) or a whole row count/);
  });

  it('gradient_checkpointing: auto where absent; true/false, a layer count k or {checkpoint_layers: k} as given; anything else names the key', () => {
    expect(resolveConfig({}, 'c.yaml').config.gradient_checkpointing).toBe('auto');
    expect(resolveConfig({ gradient_checkpointing: true }, 'c.yaml').config.gradient_checkpointing).toBe(true);
    expect(resolveConfig({ gradient_checkpointing: false }, 'c.yaml').config.gradient_checkpointing).toBe(false);
    expect(resolveConfig({ gradient_checkpointing: 3 }, 'c.yaml').config.gradient_checkpointing).toBe(3);
    expect(resolveConfig({ gradient_checkpointing: { checkpoint_layers: 2 } }, 'c.yaml').config.gradient_checkpointing).toEqual({ checkpoint_layers: 2 });
    expect(problems({ gradient_checkpointing: -1 })).toMatch(/gradient_checkpointing: .*k must be ≥ 0/);
    expect(problems({ gradient_checkpointing: 1.5 })).toMatch(/gradient_checkpointing: .*whole number of layers k ≥ 0 or \{checkpoint_layers: k\}/);
    expect(problems({ gradient_checkpointing: { checkpoint_layers: -2 } })).toMatch(/gradient_checkpointing.*checkpoint_layers must be ≥ 0/);
    expect(problems({ gradient_checkpointing: { layers: 2 } })).toMatch(/gradient_checkpointing/);
    expect(problems({ gradient_checkpointing: 'yes' })).toMatch(/gradient_checkpointing: found "yes".*expected true, false/);
  });

  it('accepts numbers written as strings (PyYAML-era configs) and all-linear', () => {
    const c = resolveConfig({ learning_rate: '2e-4', lora_target_modules: 'all-linear' }, 'c.yaml').config;
    expect(c.learning_rate).toBe(2e-4);
    expect(c.lora_target_modules.length).toBe(7);
  });

  it('warns once per key that cannot act here', () => {
    const { warnings } = resolveConfig({ push_to_hub: true, report_to: ['wandb', 'tensorboard'], optim: 'adamw_torch', auto_find_batch_size: true }, 'c.yaml');
    expect(warnings).toEqual([
      'push_to_hub: training does not upload (no network access is assumed); upload the exported adapter separately.',
      'report_to wandb: nothing is uploaded from here; TensorBoard event files are written under output_dir/runs/ instead; sync them with: wandb sync --sync-tensorboard DIR (the run prints DIR).',
      'auto_find_batch_size: ignored; the memory plan checks the batch before training starts.',
    ]);
  });

  it('normalises report_to as transformers does and refuses an unknown value, listing the valid ones', () => {
    expect(resolveConfig({ report_to: 'tensorboard' }, 'c.yaml').config.report_to).toEqual(['tensorboard']);
    expect(resolveConfig({ report_to: 'none' }, 'c.yaml').config.report_to).toEqual([]);
    expect(resolveConfig({ report_to: 'all' }, 'c.yaml').config.report_to).toEqual(['tensorboard', 'wandb']);
    expect(resolveConfig({ report_to: ['wandb', 'tensorboard'] }, 'c.yaml').config.report_to).toEqual(['wandb', 'tensorboard']);
    expect(() => resolveConfig({ report_to: ['tensorbord'] }, 'c.yaml')).toThrow(
      /report_to: unknown value 'tensorbord'; did you mean 'tensorboard'\? \(valid: none, tensorboard, wandb, all, or a list of them\)/,
    );
    expect(() => resolveConfig({ report_to: 'foo' }, 'c.yaml')).toThrow(/report_to: unknown value 'foo'/);
  });

  it('applies --model, --dataset, --output-dir and --set over the file', () => {
    const path = yamlFile('learning_rate: 1.0e-4\nlora_r: 8\ndataset_id: ./rows.jsonl\n');
    const args = parseConfigArgs(
      ['--config', path, '--model', 'my/model', '--output-dir=out', '--set', 'lora_r=4', '--set', 'lr_scheduler_kwargs.min_lr=1e-6', '--set', 'system_prompt=null', '--dry-run'],
      'train',
    );
    expect(args.dryRun).toBe(true);
    const { config } = loadConfig(args.configPath, args.overrides);
    expect(config).toMatchObject({ model_id: 'my/model', output_dir: 'out', lora_r: 4, learning_rate: 1e-4, system_prompt: null, lr_scheduler_kwargs: { min_lr: 1e-6 } });
    expect(config.dataset_id).toBe(join(path, '..', 'rows.jsonl'));
    expect(loadConfig(args.configPath, { dataset: './x.jsonl' }).config.dataset_id).toBe('./x.jsonl');
    expect(loadConfig(undefined, { set: ['lora_target_modules=[q_proj, v_proj]'] }).config.lora_target_modules).toEqual(['q_proj', 'v_proj']);
  });

  it('reports bad flags and bad YAML clearly', () => {
    expect(() => parseConfigArgs(['--datset', 'x'], 'train')).toThrow(/unknown option --datset; did you mean --dataset\?/);
    expect(() => parseConfigArgs(['--config'], 'train')).toThrow(/--config needs a value/);
    expect(() => parseConfigArgs(['stray'], 'train')).toThrow(/unexpected argument "stray"/);
    expect(() => loadConfig(yamlFile('lora_r: [1, 2\n'))).toThrow(/not valid YAML at line/);
    expect(() => loadConfig(yamlFile('- a\n- b\n'))).toThrow(/top level must be a mapping/);
    expect(() => loadConfig('/nonexistent/config.yaml')).toThrow(/--config \/nonexistent\/config.yaml: cannot read/);
    expect(loadConfig(yamlFile('')).config.lora_r).toBe(16);
  });
});
