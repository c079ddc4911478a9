/**
 * `prompt-lora generate`: text from the model (+ adapter, unmerged, on the NF4 or full base) with
 * the KV cache on the GPU; tokens streamed to stdout as they come, statistics on stderr at the end.
 */
import { existsSync, readFileSync } from 'node:fs';
import { formatFlags, parseFlags, type FlagSpec } from '../config/args.js';
import { loadConfig } from '../config/load.js';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { resolveModelDir } from '../run/model-source.js';
import { resolveRunFolder } from './export.js';
import { Generator } from '../generate/generator.js';
import { inputTokens, userTurn, type GenerationInput } from '../generate/prompt.js';
import { DEFAULT_SAMPLING } from '../generate/sampling.js';
import { SEED_PARAMETERS } from '../config/sampling-parameters.js';
import { Gpu } from '../kernels/gpu.js';
import { readQwen3Config } from '../model/config.js';
import { loadLoraAdapter } from '../model/lora.js';
import { chooseComputePath } from '../model/compute-path.js';
import { Qwen3Model } from '../model/qwen3.js';
import { QwenTokenizer, type ChatMessage } from '../model/tokenizer.js';

const GENERATE_FLAGS: readonly FlagSpec[] = [
  { name: 'model', takesValue: true, help: 'base model: a folder (config.json + safetensors) or a Hugging Face Hub id (through the cache, as train)' },
  { name: 'run', takesValue: true, help: "a training run's output folder or checkpoint: its model, adapter and rendering (system prompt, user prefix)" },
  { name: 'adapter', takesValue: true, help: 'PEFT LoRA adapter folder, applied unmerged' },
  { name: 'base', takesValue: true, help: 'nf4 (default: the QLoRA base the adapter trained on) or full (the checkpoint\'s precision)' },
  { name: 'double-quant', takesValue: false, help: 'NF4 with double-quantised block scales (bnb_4bit_use_double_quant)' },
  { name: 'prompt', takesValue: true, help: 'raw text to continue (no chat template)' },
  { name: 'chat', takesValue: true, help: 'one user message, rendered as in training (system prompt, user prefix, chat template)' },
  { name: 'messages', takesValue: true, help: 'a JSON file: [{"role": "user", "content": "…"}, …] (or {"messages": […]})' },
  { name: 'system', takesValue: true, help: `system prompt for --chat/--messages (default: the config's, else the project's); "" for none` },
  { name: 'user-prefix', takesValue: true, help: `put before the --chat text (default: the config's, else "${DEFAULT_USER_PREFIX}")` },
  { name: 'config', takesValue: true, help: 'training YAML config: system_prompt, user_prefix and enable_thinking as trained' },
  { name: 'max-new-tokens', takesValue: true, help: `most tokens to generate (default ${SEED_PARAMETERS.num_predict})` },
  { name: 'temperature', takesValue: true, help: `0 = greedy (default ${DEFAULT_SAMPLING.temperature})` },
  { name: 'top-p', takesValue: true, help: `nucleus sampling, 1 = off (default ${DEFAULT_SAMPLING.topP})` },
  { name: 'top-k', takesValue: true, help: `0 = off (default ${DEFAULT_SAMPLING.topK})` },
  { name: 'repeat-penalty', takesValue: true, help: `1 = off (default ${DEFAULT_SAMPLING.repeatPenalty})` },
  { name: 'repeat-last-n', takesValue: true, help: `tokens the repeat penalty looks back over, -1 = all (default ${DEFAULT_SAMPLING.repeatLastN})` },
  { name: 'stop', takesValue: true, repeatable: true, help: 'stop string (repeatable); the output ends before it' },
  { name: 'seed', takesValue: true, help: 'sampler seed (default: from the clock; printed at the end)' },
  { name: 'max-context', takesValue: true, help: 'KV cache size in tokens (default: prompt + max-new-tokens)' },
  { name: 'gpu-robustness', takesValue: false, help: "turn on Dawn's robustness transform (off by default, as in train): to tell a kernel's out-of-bounds access from another GPU fault" },
  { name: 'help', takesValue: false, help: 'show this help' },
];

export const GENERATE_USAGE = `usage: prompt-lora generate --model DIR [--adapter DIR] (--prompt TEXT | --chat TEXT | --messages FILE.json)
                          [--system TEXT] [--max-new-tokens N] [--temperature X] [--top-p X] [--top-k N]
                          [--repeat-penalty X] [--stop S]... [--seed N] [--base nf4|full]

Generates text with the model (and LoRA adapter) on the GPU, streamed to stdout; statistics go to stderr.
Sampling follows llama.cpp (repeat penalty → top_k → top_p → temperature); defaults are the Ollama
Modelfile's that \`export\` writes.

${formatFlags(GENERATE_FLAGS)}`;

/** A number flag: a ConfigError naming the flag when it is not one, not whole (`integer`) or below `min`. */
function numberFlag(flags: Map<string, string[]>, name: string, integer: boolean, min: number): number | undefined {
  const text = flags.get(name)?.[0];
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min) {
    throw new ConfigError(`--${name} ${text}: expected ${integer ? 'a whole number' : 'a number'} ≥ ${min}`);
  }
  return v;
}

/** The messages of a --messages file: an array of {role, content}, or an object holding one under "messages". */
export function readMessagesFile(path: string): ChatMessage[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`--messages ${path}: cannot read it as JSON (${(e as Error).message})`);
  }
  const list = Array.isArray(json) ? json : (json as { messages?: unknown } | null)?.messages;
  if (!Array.isArray(list) || list.length === 0) throw new ConfigError(`--messages ${path}: expected a non-empty array of {"role", "content"} (or {"messages": [...]})`);
  return list.map((m, i) => {
    const { role, content } = (m ?? {}) as { role?: unknown; content?: unknown };
    if (!['system', 'user', 'assistant', 'tool'].includes(role as string) || typeof content !== 'string') {
      throw new ConfigError(`--messages ${path}: message ${i} must be {"role": "system"|"user"|"assistant"|"tool", "content": string}, got ${JSON.stringify(m)}`);
    }
    return { role: role as ChatMessage['role'], content };
  });
}

export async function runGenerate(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, GENERATE_FLAGS, 'generate');
  const one = (name: string): string | undefined => flags.get(name)?.[0];
  if (flags.has('help')) {
    console.log(GENERATE_USAGE);
    return 0;
  }
  const run = one('run');
  const found = run !== undefined ? resolveRunFolder(run) : undefined;
  const configPath = one('config') ?? found?.configPath;
  const trained = configPath !== undefined ? loadConfig(configPath).config : undefined;
  const modelFlag = one('model');
  // A folder, a Hub id or the run's model_id, resolved as `train` resolves them.
  const modelSource = modelFlag !== undefined ? { model_id: modelFlag, random_weights: false, model_revision: 'main' } : run !== undefined ? trained : undefined;
  if (modelSource === undefined) throw new ConfigError(`generate needs --model DIR|HUB_ID or --run DIR${run !== undefined ? ` (${run} has no config.yaml naming model_id)` : ''}\n\n${GENERATE_USAGE}`);
  // A path that is not there (not of the owner/name form of a Hub id) is read as a folder, so its error names the missing config.json.
  const localPath = modelFlag !== undefined && (existsSync(modelFlag) || !/^[\w.-]+\/[\w.-]+$/.test(modelFlag));
  const modelDir = localPath ? modelFlag : await resolveModelDir(modelSource, (line) => console.error(line));
  const sources = ['prompt', 'chat', 'messages'].filter((f) => flags.has(f));
  if (sources.length !== 1) throw new ConfigError(`generate needs exactly one of --prompt, --chat, --messages (got ${sources.length === 0 ? 'none' : sources.map((s) => `--${s}`).join(', ')})`);
  const base = one('base') ?? 'nf4';
  if (base !== 'nf4' && base !== 'full') throw new ConfigError(`--base ${base}: choose nf4 or full`);
  if (flags.has('double-quant') && base !== 'nf4') throw new ConfigError('--double-quant applies to --base nf4 only');
  const systemText = one('system');
  const systemPrompt = systemText !== undefined ? (systemText === '' ? null : systemText) : trained ? trained.system_prompt : DEFAULT_SYSTEM_PROMPT;
  const userPrefix = one('user-prefix') ?? trained?.user_prefix ?? DEFAULT_USER_PREFIX;
  const enableThinking = trained?.enable_thinking ?? false;
  const maxNewTokens = numberFlag(flags, 'max-new-tokens', true, 1) ?? SEED_PARAMETERS.num_predict;
  const options = {
    maxNewTokens,
    temperature: numberFlag(flags, 'temperature', false, 0),
    topP: numberFlag(flags, 'top-p', false, 0),
    topK: numberFlag(flags, 'top-k', true, 0),
    repeatPenalty: numberFlag(flags, 'repeat-penalty', false, 0),
    repeatLastN: numberFlag(flags, 'repeat-last-n', true, -1),
    seed: numberFlag(flags, 'seed', true, 0),
    stop: flags.get('stop') ?? [],
    systemPrompt,
    enableThinking,
  };
  const maxContextFlag = numberFlag(flags, 'max-context', true, 2);
  let input: GenerationInput;
  const promptText = one('prompt');
  const chatText = one('chat');
  const messagesFile = one('messages');
  if (promptText !== undefined) input = { prompt: promptText };
  else if (chatText !== undefined) input = { messages: [userTurn(chatText, userPrefix)] };
  else input = { messages: readMessagesFile(messagesFile!) };

  // Checked before the GPU is opened: a missing or broken model folder fails fast.
  const config = await readQwen3Config(modelDir);
  const tokenizer = await QwenTokenizer.load(modelDir);
  const promptLength = inputTokens(tokenizer, input, config.vocabSize, options).length;
  const context = config.maxPositionEmbeddings;
  if (promptLength + maxNewTokens > context) {
    throw new ConfigError(`--max-new-tokens ${maxNewTokens}: the prompt (${promptLength} tokens) plus ${maxNewTokens} new tokens is past the model's context of ${context} tokens (max_position_embeddings in ${modelDir}/config.json); give --max-new-tokens ${Math.max(1, context - promptLength)} or less`);
  }
  if (maxContextFlag !== undefined && maxContextFlag > context) throw new ConfigError(`--max-context ${maxContextFlag}: past the model's context of ${context} tokens (max_position_embeddings in ${modelDir}/config.json)`);
  const gpu = await Gpu.open({ robustness: flags.has('gpu-robustness') });
  try {
    // the prefill's projections on tensor cores where the adapter has them (compute_dtype auto); decode stays on the matrix-vector kernel
    const model = await Qwen3Model.load(gpu, modelDir, { base, doubleQuant: flags.has('double-quant'), compute: chooseComputePath(gpu, 'auto', config).path });
    const adapterDir = one('adapter') ?? found?.adapterDir;
    const adapter = adapterDir !== undefined ? await loadLoraAdapter(gpu, adapterDir, config) : undefined;
    const promptTokens = inputTokens(tokenizer, input, config.vocabSize, options);
    const maxContext = maxContextFlag ?? Math.min(config.maxPositionEmbeddings, promptTokens.length + maxNewTokens);
    const gen = await Generator.create(gpu, model, { adapter, maxContext, tokenizer });
    try {
      const r = await gen.generate({ tokens: promptTokens }, options, (text) => process.stdout.write(text));
      process.stdout.write('\n');
      const rate = Number.isFinite(r.decodeTokensPerSecond) ? `, decode ${r.decodeTokensPerSecond.toFixed(1)} tokens/s` : '';
      console.error(
        `generate: ${r.tokens.length} tokens (${r.stopReason}) in ${r.seconds.toFixed(2)} s: prompt ${r.promptTokens} tokens in ${r.prefillSeconds.toFixed(2)} s${rate}; ` +
          `seed ${r.seed}; ${gpu.describe()}`,
      );
      return 0;
    } finally {
      gen.destroy();
    }
  } finally {
    gpu.destroy();
  }
}
