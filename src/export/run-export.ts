import { join, relative, resolve } from 'node:path';
import type { TrainConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { formatBytes, runExportRequest, type ExportedFile } from './export-command.js';
import type { ModelfileSettings } from './modelfile.js';

/**
 * The export at the end of a training run, as the run's config asks (export_gguf,
 * export_lora_gguf, export_merged, export_modelfile; the PEFT adapter always), through the
 * `export` command's own code (runExportRequest): the same checks, temporary names and llama.cpp-
 * verified writers. Outputs go straight into the run's folder (`outDir`, normally output_dir),
 * replacing an earlier run's exports there:
 *   <outDir>/adapter/                    PEFT adapter (rewritten from adapterDir)
 *   <outDir>/<name>-<type>.gguf          merged model GGUF, name = the folder's name
 *   <outDir>/<name>-base-<type>.gguf + <name>-lora.gguf     with export_lora_gguf
 *   <outDir>/merged/                     with export_merged
 *   <outDir>/Modelfile (+ Modelfile.adapter)                with export_modelfile
 * Returns the files with their sizes and the command lines to print (`ollama create`, `ollama
 * run`, `llama-cli`), with paths relative to the working directory when they are inside it.
 */
export interface RunExportRequest {
  readonly config: TrainConfig;
  /** The base model folder the run trained on. */
  readonly modelDir: string;
  /** The final (best) adapter, PEFT layout. */
  readonly adapterDir: string;
  readonly outDir: string;
  readonly log?: (line: string) => void;
  /** Worker threads encoding the weights (default: the machine's cores, at most 16). */
  readonly threads?: number;
}

export interface RunExportResult {
  readonly files: readonly ExportedFile[];
  /** Lines to print after the run: where everything is and how to run it. */
  readonly commands: { readonly ollamaCreate?: string; readonly ollamaRun?: string; readonly llamaCli?: string };
  /** A ready-to-print summary: one line per file, then the commands. */
  readonly summary: readonly string[];
}

/** Modelfile settings from the run's config: the training rendering's system prompt, user prefix and thinking switch. */
export function modelfileSettings(config: TrainConfig): ModelfileSettings {
  return {
    systemPrompt: config.system_prompt,
    userPrefix: config.user_prefix,
    enableThinking: config.enable_thinking,
    parameters: { num_ctx: Math.max(512, config.max_seq_length) },
  };
}

export async function exportRun(req: RunExportRequest): Promise<RunExportResult> {
  const { config } = req;
  const out = resolve(req.outDir);
  const name = exportName(out);
  if (config.export_modelfile && config.export_gguf === null && !config.export_lora_gguf) {
    throw new ConfigError('export_modelfile: the Modelfile needs a GGUF to load; set export_gguf (e.g. q8_0) or export_lora_gguf');
  }
  const result = await runExportRequest({
    modelDir: req.modelDir,
    adapterDir: req.adapterDir,
    outDir: out,
    gguf: config.export_gguf ?? undefined,
    loraGguf: config.export_lora_gguf,
    merged: config.export_merged,
    modelfile: config.export_modelfile,
    mergeBase: 'original',
    name,
    // the run's folder is ours: an earlier run's exports there are replaced
    force: true,
    settings: modelfileSettings(config),
    log: req.log,
    threads: req.threads,
  });

  const shown = (p: string): string => {
    const r = relative(process.cwd(), p);
    return r !== '' && !r.startsWith('..') ? r : p;
  };
  const gguf = config.export_gguf ? join(out, `${name}-${config.export_gguf}.gguf`) : undefined;
  const base = config.export_lora_gguf ? join(out, `${name}-base-${config.export_gguf ?? 'f16'}.gguf`) : undefined;
  const lora = config.export_lora_gguf ? join(out, `${name}-lora.gguf`) : undefined;
  const commands = {
    ollamaCreate: result.ollamaCreate ? `ollama create ${name} -f ${shown(join(out, 'Modelfile'))}` : undefined,
    ollamaRun: result.ollamaCreate ? `ollama run ${name} "A fox crosses a frozen lake under the northern lights"` : undefined,
    llamaCli: gguf
      ? `llama-cli -m ${shown(gguf)} -cnv`
      : base && lora
        ? `llama-cli -m ${shown(base)} --lora ${shown(lora)} -cnv`
        : undefined,
  };
  const width = Math.max(...result.files.map((f) => shown(f.path).length));
  const summary = [
    ...result.files.map((f) => `  ${shown(f.path).padEnd(width)}  ${formatBytes(f.bytes).padStart(9)}  ${f.what}`),
    ...(commands.ollamaCreate ? [`Ollama:    ${commands.ollamaCreate} && ${commands.ollamaRun}`] : []),
    ...(commands.llamaCli ? [`llama.cpp: ${commands.llamaCli}`] : []),
  ];
  return { files: result.files, commands, summary };
}

/** The model name of an export folder: its name, made safe for file names and `ollama create`. */
export function exportName(outDir: string): string {
  const base = resolve(outDir).split(/[\\/]/).pop() ?? 'model';
  const safe = base.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return safe === '' ? 'model' : safe;
}
