/**
 * The training configuration: every key, its type, allowed range and default, in one place.
 *
 * The keys are the original Python pipeline's (TRL SFTTrainer + PEFT + bitsandbytes; see
 * docs/seed.md) with the same meaning, plus the data-path keys this project adds (marked
 * "new"). Defaults: the seed's v2 config for keys it sets, else the default of the library that
 * owned the key (TrainingArguments / TRL SFTConfig / PEFT LoraConfig), except where the seed's
 * own history names the library default a flaw (noted at the key).
 */
import { z } from 'zod';
import { GGUF_FILE_TYPES } from '../export/gguf-model.js';
import { bundledDatasetDir } from './paths.js';

/** The seven Qwen3 linear projections a LoRA adapter can wrap (one list, kept with the checkpoint layout). */
import { PROJECTIONS, type Projection } from '../model/checkpoint.js';
export { PROJECTIONS, type Projection };

/** Dataset row formats (item 3 of the data issue); `auto` detects from the columns. */
export const DATASET_FORMATS = [
  'auto',
  'messages',
  'prompt_completion',
  'text',
  'instruction_response',
  'instruction_output',
  'video_style',
] as const;
export type DatasetFormatName = Exclude<(typeof DATASET_FORMATS)[number], 'auto'>;

/** The seed's system message, with the Modelfile's "output only" instruction (the export writes the same string). */
export const DEFAULT_SYSTEM_PROMPT =
  'You are a cinematic video prompt generator. Output only the cinematic video prompt — no labels, no preamble.';
/** The seed's user prefix: training instructions and the Ollama template both put it before a bare scene. */
export const DEFAULT_USER_PREFIX = 'Generate a cinematic video prompt for: ';

/** Accepts numbers written as strings ("2e-4", as PyYAML-era configs often hold them). */
function numeric<T extends z.ZodType>(inner: T) {
  return z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v), inner);
}
const positiveInt = (what: string) => numeric(z.number().int(`${what} must be a whole number`).min(1, `${what} must be ≥ 1`));
const nullableString = z.string().nullable();

export const configSchema = z
  .object({
    // ── Model and data ────────────────────────────────────────────────────────────────────
    /** Local folder or Hugging Face Hub id of the base model (with random_weights: a config.json or a folder holding one). */
    model_id: z.string().min(1).default('Qwen/Qwen3-4B-Instruct-2507'),
    /**
     * new: train on deterministic random weights made for model_id's config.json (real size where
     * weights cannot be downloaded; written once under outputs/.random-models, with the bundled Qwen3 tokenizer).
     */
    random_weights: z.boolean().default(false),
    /** new: Hub revision (branch, tag or commit) of the model. */
    model_revision: z.string().min(1).default('main'),
    /** Local file/folder or Hub dataset id; default: the dataset bundled under data/. */
    dataset_id: z.string().min(1).default(bundledDatasetDir()),
    /** new: Hub revision of the dataset. */
    dataset_revision: z.string().min(1).default('main'),
    /** Column used verbatim by the `text` format (TRL's dataset_text_field). */
    dataset_text_field: z.string().min(1).default('text'),
    /** new: row format; `auto` prefers structured columns (messages, prompt/completion, instruction/…) over `text`. */
    dataset_format: z.enum(DATASET_FORMATS).default('auto'),
    /** new: instruction-style rows through the chat template (`chat`) or the seed's `### Instruction:` blocks (`alpaca`). */
    instruction_format: z.enum(['chat', 'alpaca']).default('chat'),
    /** new: name of the training split. */
    train_split: z.string().min(1).default('train'),
    /** new: name of the dataset's own evaluation split (valid/val/dev/eval also match `validation`). */
    eval_split: z.string().min(1).default('validation'),
    /** new: held-out share (0 ≤ x < 1) or row count (integer ≥ 1) when the dataset has no evaluation split. */
    test_size: numeric(z.number().min(0, 'test_size must be ≥ 0 (a fraction below 1 or a whole row count)')).default(0.1),
    /** Seed of the eval split, the shuffles and LoRA initialisation (TrainingArguments.seed). */
    seed: numeric(z.number().int('seed must be a whole number').min(0, 'seed must be ≥ 0')).default(42),
    /** new: the run refuses to start when more than this share of rows is unusable. */
    max_bad_row_fraction: numeric(z.number().min(0, 'max_bad_row_fraction must be in [0, 1]').max(1, 'max_bad_row_fraction must be in [0, 1]')).default(0.05),
    /** new: system message added to conversations that have none (null: none). The export's Modelfile SYSTEM uses it too. */
    system_prompt: nullableString.default(DEFAULT_SYSTEM_PROMPT),
    /** new: put before the user text of instruction-style rows unless already there; the Ollama TEMPLATE uses it too. */
    user_prefix: z.string().default(DEFAULT_USER_PREFIX),
    /** new: passed to the chat template; false gives Qwen3's empty think block. */
    enable_thinking: z.boolean().default(false),
    /** new (TRL's name): loss on assistant/completion tokens only; false = whole text (the seed's behaviour). */
    completion_only_loss: z.boolean().default(true),
    max_seq_length: positiveInt('max_seq_length').pipe(z.number().max(131072, 'max_seq_length must be ≤ 131072')).default(512),
    /** Pack several examples per row (best-fit decreasing, attention kept inside each example). */
    packing: z.boolean().default(false),
    group_by_length: z.boolean().default(false),
    /** Accepted and unused, as in the seed. */
    preprocessing: z.unknown().default(null),

    // ── LoRA ──────────────────────────────────────────────────────────────────────────────
    lora_r: positiveInt('lora_r').pipe(z.number().max(1024, 'lora_r must be ≤ 1024')).default(16),
    lora_alpha: numeric(z.number().gt(0, 'lora_alpha must be > 0')).default(32),
    lora_dropout: numeric(z.number().min(0, 'lora_dropout must be in [0, 1)').lt(1, 'lora_dropout must be in [0, 1)')).default(0.05),
    /** Full projection names, or "all-linear" for all seven. */
    lora_target_modules: z.union([z.array(z.string()).min(1, 'lora_target_modules must name at least one projection'), z.literal('all-linear')]).default([
      'q_proj',
      'k_proj',
      'v_proj',
      'o_proj',
    ]),
    /** PEFT's rank-stabilised scale alpha/√r instead of alpha/r. */
    use_rslora: z.boolean().default(false),

    // ── Quantisation ──────────────────────────────────────────────────────────────────────
    use_4bit: z.boolean().default(true),
    use_8bit: z.boolean().default(false),
    bnb_4bit_compute_dtype: z.enum(['bfloat16', 'float16', 'float32']).default('bfloat16'),
    bnb_4bit_quant_type: z.enum(['nf4', 'fp4']).default('nf4'),
    bnb_4bit_use_double_quant: z.boolean().default(false),
    /**
     * new: the projections' matmul precision (issue 11 item 5). `auto`: f16 operands with f32
     * accumulation on tensor cores (subgroup matrices) where the adapter offers them, else f32;
     * `float32`: always the f32 path (the reference); `float16`: tensor cores or a DeviceError
     * naming what the adapter lacks. bnb_4bit_compute_dtype (bitsandbytes' key) does not choose it.
     */
    compute_dtype: z.enum(['auto', 'float32', 'float16']).default('auto'),

    // ── Optimisation ──────────────────────────────────────────────────────────────────────
    num_train_epochs: numeric(z.number().gt(0, 'num_train_epochs must be > 0')).default(3),
    /** Overrides num_train_epochs when > 0 (TrainingArguments). */
    max_steps: numeric(z.number().int('max_steps must be a whole number').min(-1, 'max_steps must be -1 (off) or ≥ 1')).default(-1),
    per_device_train_batch_size: positiveInt('per_device_train_batch_size').default(2),
    per_device_eval_batch_size: positiveInt('per_device_eval_batch_size').default(8),
    gradient_accumulation_steps: positiveInt('gradient_accumulation_steps').default(8),
    learning_rate: numeric(z.number().gt(0, 'learning_rate must be > 0').max(1, 'learning_rate must be ≤ 1')).default(2e-4),
    warmup_ratio: numeric(z.number().min(0, 'warmup_ratio must be in [0, 1]').max(1, 'warmup_ratio must be in [0, 1]')).default(0.03),
    /** Overrides warmup_ratio when > 0 (TrainingArguments). */
    warmup_steps: numeric(z.number().int('warmup_steps must be a whole number').min(0, 'warmup_steps must be ≥ 0')).default(0),
    lr_scheduler_type: z.enum(['linear', 'cosine', 'cosine_with_min_lr', 'constant', 'constant_with_warmup']).default('cosine'),
    lr_scheduler_kwargs: z
      .object({
        min_lr: numeric(z.number().min(0, 'lr_scheduler_kwargs.min_lr must be ≥ 0')).optional(),
        min_lr_rate: numeric(z.number().min(0, 'lr_scheduler_kwargs.min_lr_rate must be in [0, 1]').max(1, 'lr_scheduler_kwargs.min_lr_rate must be in [0, 1]')).optional(),
        num_cycles: numeric(z.number().gt(0, 'lr_scheduler_kwargs.num_cycles must be > 0')).optional(),
      })
      .strict()
      .default({}),
    weight_decay: numeric(z.number().min(0, 'weight_decay must be ≥ 0')).default(0),
    /** Accepted names; all run as AdamW here (see the warnings in validateConfig). */
    optim: z.enum(['paged_adamw_8bit', 'paged_adamw_32bit', 'adamw_8bit', 'adamw_torch', 'adamw_torch_fused', 'adamw']).default('paged_adamw_8bit'),
    adam_beta1: numeric(z.number().min(0, 'adam_beta1 must be in [0, 1)').lt(1, 'adam_beta1 must be in [0, 1)')).default(0.9),
    adam_beta2: numeric(z.number().min(0, 'adam_beta2 must be in [0, 1)').lt(1, 'adam_beta2 must be in [0, 1)')).default(0.999),
    adam_epsilon: numeric(z.number().gt(0, 'adam_epsilon must be > 0')).default(1e-8),
    /** Gradient clipping by global norm; 0 turns it off. */
    max_grad_norm: numeric(z.number().min(0, 'max_grad_norm must be ≥ 0')).default(1.0),
    fp16: z.boolean().default(false),
    bf16: z.boolean().default(true),
    /**
     * true: every layer recomputed in the backward (less memory); false: none; an integer k or
     * { checkpoint_layers: k }: layers 0..k−1 only (k ≤ the model's layers, checked once it is known);
     * auto (the default): the fewest recomputed layers whose memory plan fits max_memory or the
     * device's memory (all layers where neither is known, said so); src/train/auto-recompute.ts.
     * The shipped seed configs keep the seed's explicit true.
     */
    gradient_checkpointing: z
      .union([
        z.boolean(),
        z.literal('auto'),
        numeric(z.number().int('gradient_checkpointing must be true, false, a whole number of layers k ≥ 0 or {checkpoint_layers: k}').min(0, 'gradient_checkpointing: the layer count k must be ≥ 0')),
        z.object({ checkpoint_layers: numeric(z.number().int('gradient_checkpointing.checkpoint_layers must be a whole number').min(0, 'gradient_checkpointing.checkpoint_layers must be ≥ 0')) }).strict(),
      ], { error: 'expected true, false, auto, a whole number of layers k ≥ 0 or {checkpoint_layers: k}' })
      .default('auto'),
    /**
     * GPU memory the run may plan for, in GiB (a number, or a string such as "20GiB", "20GB",
     * "20000MiB"); null: the device's own where known. Used by gradient_checkpointing: auto.
     */
    max_memory: z
      .union([z.null(), numeric(z.number().positive('max_memory must be > 0 (GiB)')), z.string().regex(/^\s*\d+(\.\d+)?\s*(GiB|GB|MiB|MB)\s*$/i, 'max_memory: expected GiB as a number or a size such as "20GiB", "20GB" or "20000MiB"')])
      .default(null),
    auto_find_batch_size: z.boolean().default(false),

    // ── Logging, saving, evaluation ───────────────────────────────────────────────────────
    output_dir: z.string().min(1).default('outputs/qwen3-4b-lora'),
    /** A new run into an output_dir holding another run's checkpoints or adapter removes that run's files first (else it is refused). */
    overwrite_output_dir: z.boolean().default(false),
    logging_steps: positiveInt('logging_steps').default(10),
    save_strategy: z.enum(['no', 'steps', 'epoch', 'best']).default('steps'),
    save_steps: positiveInt('save_steps').default(50),
    save_total_limit: positiveInt('save_total_limit').nullable().default(null),
    /** Default `epoch`, not TrainingArguments' `no`: the seed's run without evaluation memorised its data. */
    eval_strategy: z.enum(['no', 'steps', 'epoch']).default('epoch'),
    /** For eval_strategy `steps`; null = logging_steps (TrainingArguments). */
    eval_steps: positiveInt('eval_steps').nullable().default(null),
    load_best_model_at_end: z.boolean().default(false),
    metric_for_best_model: z.enum(['eval_loss', 'loss']).default('eval_loss'),
    greater_is_better: z.boolean().default(false),
    /** Evaluations without improvement before stopping; null = no early stopping. */
    early_stopping_patience: positiveInt('early_stopping_patience').nullable().default(null),
    early_stopping_threshold: numeric(z.number().min(0, 'early_stopping_threshold must be ≥ 0')).default(0),
    resume_from_checkpoint: nullableString.default(null),
    push_to_hub: z.boolean().default(false),
    hub_model_id: nullableString.default(null),
    /** "none", or integrations by name (string or list, REPORT_TO_VALUES); checked in load.ts. */
    report_to: z.union([z.string(), z.array(z.string())]).default('none'),
    run_name: nullableString.default(null),
    wandb_project: nullableString.default(null),
    /** new: instructions the model answers at each evaluation (report.html's sample generations); [] = none. */
    sample_prompts: z
      .array(z.string().min(1, 'sample_prompts: an empty prompt'))
      .default([
        'A lighthouse keeper climbs the spiral stairs during a storm at night',
        'Two old friends share tea on a rooftop in Kyoto at dawn',
        'A fox crosses a frozen lake under the northern lights',
      ]),
    /** new: most tokens of each sample generation (0 = no samples). */
    sample_max_new_tokens: z.number().int().min(0, 'sample_max_new_tokens must be ≥ 0').default(96),

    // ── Export at the end of the run (new; the adapter is always saved) ───────────────────
    /** new: GGUF of the merged model (base + the final adapter) for llama.cpp / Ollama; null = none. The seed exported q8_0. */
    export_gguf: z.enum(GGUF_FILE_TYPES).nullable().default('q8_0'),
    /** new: LoRA adapter GGUF (llama.cpp --lora, Ollama ADAPTER) plus the base model GGUF it applies to (export_gguf's type, else f16). */
    export_lora_gguf: z.boolean().default(false),
    /** new: the merged model as a Hugging Face folder (safetensors + tokenizer), as the seed's merge script wrote. */
    export_merged: z.boolean().default(false),
    /** new: Ollama Modelfile FROM the merged GGUF (needs export_gguf), and Modelfile.adapter with export_lora_gguf. */
    export_modelfile: z.boolean().default(true),
  })
  .strict();

/** What a YAML file and the overrides may contain. */
export type ConfigInput = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;

/**
 * The one configuration object every module receives (deep-frozen). Same keys as the YAML, with
 * `lora_target_modules` and `report_to` normalised to lists and `eval_steps` resolved.
 */
export type TrainConfig = Readonly<
  Omit<Parsed, 'lora_target_modules' | 'report_to' | 'eval_steps' | 'lr_scheduler_kwargs'> & {
    lora_target_modules: readonly Projection[];
    report_to: readonly string[];
    eval_steps: number;
    lr_scheduler_kwargs: Readonly<Parsed['lr_scheduler_kwargs']>;
  }
>;

/**
 * report_to values: tensorboard writes event files under output_dir/runs/; wandb writes the same
 * files and says how to sync them (`wandb sync --sync-tensorboard`); all = every one of those.
 */
export const REPORT_TO_VALUES = ['none', 'tensorboard', 'wandb', 'all'] as const;

/** Every top-level key, for unknown-key suggestions and `--set`. */
export const CONFIG_KEYS: readonly string[] = Object.keys(configSchema.shape);
/** Nested keys that `--set a.b=v` may address. */
export const NESTED_CONFIG_KEYS: Readonly<Record<string, readonly string[]>> = {
  lr_scheduler_kwargs: Object.keys(configSchema.shape.lr_scheduler_kwargs.unwrap().shape),
};
