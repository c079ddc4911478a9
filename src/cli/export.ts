/**
 * `prompt-lora export`: adapter, merged folder, GGUF, LoRA GGUF and Ollama Modelfile from a run's
 * output folder or any adapter + base model (src/export/export-command.ts does the work).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatFlags, parseFlags, type FlagSpec } from '../config/args.js';
import { loadConfig } from '../config/load.js';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { resolveModelDir } from '../run/model-source.js';
import { GGUF_FILE_TYPES, isGgufFileType } from '../export/gguf-model.js';
import { formatBytes, runExportRequest } from '../export/export-command.js';
import type { FolderDtype } from '../export/hf-folder.js';
import type { ModelfileSettings } from '../export/modelfile.js';

const EXPORT_FLAGS: readonly FlagSpec[] = [
  { name: 'run', takesValue: true, help: 'a training run\'s output folder (its adapter and config are found there)' },
  { name: 'model', takesValue: true, help: 'base model folder (Hugging Face: config.json + safetensors)' },
  { name: 'adapter', takesValue: true, help: 'PEFT adapter folder (adapter_config.json + adapter_model.safetensors)' },
  { name: 'out', takesValue: true, help: 'output folder' },
  { name: 'gguf', takesValue: true, help: `merged model GGUF of this type: ${GGUF_FILE_TYPES.join(', ')}` },
  { name: 'lora-gguf', takesValue: false, help: 'LoRA adapter GGUF plus the base model GGUF it applies to (type of --gguf, else f16)' },
  { name: 'merged', takesValue: false, help: 'merged model as a Hugging Face folder' },
  { name: 'merged-dtype', takesValue: true, help: 'dtype of the merged folder: source (default), bf16, f16, f32' },
  { name: 'modelfile', takesValue: false, help: 'Ollama Modelfile (and Modelfile.adapter with --lora-gguf); implies --gguf q8_0 unless given' },
  { name: 'merge-base', takesValue: true, help: 'merge into the original weights (original, default) or their NF4 round trip (nf4)' },
  { name: 'double-quant', takesValue: false, help: 'with --merge-base nf4: double-quantised NF4 scales, as trained with bnb_4bit_use_double_quant' },
  { name: 'config', takesValue: true, help: 'training YAML config: system_prompt, user_prefix, enable_thinking, max_seq_length for the Modelfile' },
  { name: 'name', takesValue: true, help: 'model name for files and `ollama create` (default: the --out folder name)' },
  { name: 'force', takesValue: false, help: 'replace existing outputs' },
  { name: 'threads', takesValue: true, help: 'worker threads encoding the weights (default: all cores, at most 16)' },
  { name: 'help', takesValue: false, help: 'show this help' },
];

export const EXPORT_USAGE = `usage: prompt-lora export (--run DIR | --adapter DIR) [--model DIR] --out DIR
                        [--gguf ${GGUF_FILE_TYPES.join('|')}] [--lora-gguf] [--merged] [--modelfile]

Writes the adapter again (PEFT layout) and the chosen exports; with no --gguf/--lora-gguf/--merged/
--modelfile it writes a q8_0 GGUF and its Modelfile (the seed's export).

${formatFlags(EXPORT_FLAGS)}`;

/** Run-folder layout searched for the adapter: the folder itself, then these, then the last checkpoint-N. */
const RUN_ADAPTER_DIRS = ['adapter', 'final', 'best'];
const RUN_CONFIG_FILES = ['config.yaml', 'train_config.yaml', 'run_config.yaml'];

function isAdapterDir(dir: string): boolean {
  return existsSync(join(dir, 'adapter_config.json')) && existsSync(join(dir, 'adapter_model.safetensors'));
}

/**
 * The adapter folder and training config of `--run DIR`: a run's output folder (its config.yaml,
 * else its newest checkpoint's; the final adapter/, else the newest checkpoint's) or a checkpoint.
 */
export function resolveRunFolder(dir: string): { adapterDir: string; configPath: string | undefined } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ConfigError(`--run ${dir}: no such folder`);
  const checkpoints = readdirSync(dir)
    .map((f) => /^checkpoint-(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null && isAdapterDir(join(dir, m[0])))
    .sort((a, b) => Number(b[1]) - Number(a[1]))
    .map((m) => join(dir, m[0]));
  const configIn = (d: string): string | undefined => RUN_CONFIG_FILES.map((f) => join(d, f)).find(existsSync);
  const configPath = configIn(dir) ?? (checkpoints.length > 0 ? configIn(checkpoints[0]) : undefined);
  if (isAdapterDir(dir)) return { adapterDir: dir, configPath };
  for (const sub of RUN_ADAPTER_DIRS) if (isAdapterDir(join(dir, sub))) return { adapterDir: join(dir, sub), configPath };
  if (checkpoints.length > 0) return { adapterDir: checkpoints[0], configPath };
  throw new ConfigError(`--run ${dir}: no adapter found (looked for adapter_config.json + adapter_model.safetensors in it, in ${RUN_ADAPTER_DIRS.join('/, ')}/ and in checkpoint-N/)`);
}

export async function runExport(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, EXPORT_FLAGS, 'export');
  const one = (name: string): string | undefined => flags.get(name)?.[0];
  if (flags.has('help')) {
    console.log(EXPORT_USAGE);
    return 0;
  }
  const run = one('run');
  let adapterDir = one('adapter');
  let configPath = one('config');
  if (run !== undefined) {
    const found = resolveRunFolder(run);
    adapterDir ??= found.adapterDir;
    configPath ??= found.configPath;
  }
  if (adapterDir === undefined) throw new ConfigError(`export needs --run DIR or --adapter DIR\n\n${EXPORT_USAGE}`);
  const outDir = one('out');
  if (outDir === undefined) throw new ConfigError(`export needs --out DIR\n\n${EXPORT_USAGE}`);

  const config = configPath !== undefined ? loadConfig(configPath).config : undefined;
  let modelDir = one('model');
  // The run's model, found as `train` finds it (embedded, random weights, local folder, Hub id through the cache).
  if (modelDir === undefined && config !== undefined) modelDir = await resolveModelDir(config, (line) => console.error(line));
  if (modelDir === undefined) throw new ConfigError(`export needs --model DIR (or --run DIR / --config FILE naming model_id), the base model the adapter was trained on`);

  const gguf = one('gguf');
  if (gguf !== undefined && !isGgufFileType(gguf)) throw new ConfigError(`--gguf ${gguf}: unknown type; choose one of ${GGUF_FILE_TYPES.join(', ')}`);
  const mergedDtype = one('merged-dtype') ?? 'source';
  if (!['source', 'bf16', 'f16', 'f32'].includes(mergedDtype)) throw new ConfigError(`--merged-dtype ${mergedDtype}: choose source, bf16, f16 or f32`);
  const mergeBase = one('merge-base') ?? 'original';
  if (mergeBase !== 'original' && mergeBase !== 'nf4') throw new ConfigError(`--merge-base ${mergeBase}: choose original or nf4`);
  if (flags.has('double-quant') && mergeBase !== 'nf4') throw new ConfigError('--double-quant applies to --merge-base nf4 only');
  const threadsText = one('threads');
  const threads = threadsText === undefined ? undefined : Number(threadsText);
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1)) throw new ConfigError(`--threads ${threadsText}: give a whole number ≥ 1`);
  const anyOutput = ['gguf', 'lora-gguf', 'merged', 'modelfile'].some((f) => flags.has(f));

  const settings: ModelfileSettings = {
    systemPrompt: config ? config.system_prompt : DEFAULT_SYSTEM_PROMPT,
    userPrefix: config ? config.user_prefix : DEFAULT_USER_PREFIX,
    enableThinking: config ? config.enable_thinking : false,
    parameters: config ? { num_ctx: Math.max(512, config.max_seq_length) } : {},
  };
  const result = await runExportRequest({
    modelDir,
    adapterDir,
    outDir,
    gguf: anyOutput ? (gguf as typeof GGUF_FILE_TYPES[number] | undefined) : 'q8_0',
    loraGguf: flags.has('lora-gguf'),
    merged: flags.has('merged'),
    modelfile: anyOutput ? flags.has('modelfile') : true,
    mergedDtype: mergedDtype as FolderDtype,
    mergeBase,
    doubleQuant: mergeBase === 'nf4' && (flags.has('double-quant') || (config?.bnb_4bit_use_double_quant ?? false)),
    name: one('name'),
    force: flags.has('force'),
    threads,
    settings,
    log: (line) => console.error(line),
  });
  console.log(`export: ${resolve(adapterDir)} on ${resolve(modelDir)}`);
  const width = Math.max(...result.files.map((f) => f.path.length));
  for (const f of result.files) console.log(`  ${f.path.padEnd(width)}  ${formatBytes(f.bytes).padStart(9)}  ${f.what}`);
  if (result.ollamaCreate) console.log(`\nto run it in Ollama:\n  ${result.ollamaCreate}`);
  return 0;
}
