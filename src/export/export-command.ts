import { existsSync, readdirSync, statSync } from 'node:fs';
import { statfs, mkdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ConfigError, ExportError } from '../errors.js';
import { readQwen3Config } from '../model/config.js';
import { QwenTokenizer } from '../model/tokenizer.js';
import { qwen3GgufBytes, writeQwen3Gguf, type GgufFileType } from './gguf-model.js';
import { loraGgufBytes, writeLoraGguf } from './gguf-lora.js';
import { readGgufTokenizer } from './gguf-tokenizer.js';
import { writeHfFolder, type FolderDtype } from './hf-folder.js';
import { MergedWeights, type MergeBase } from './merge.js';
import { buildModelfile, type ModelfileSettings } from './modelfile.js';
import { readPeftAdapter, savePeftAdapter } from '../model/peft.js';
import { QuantizePool } from './quantize-pool.js';
import { tokenizerSourceDir } from './tokenizer-files.js';
import { writeFileAtomic } from '../io/atomic-file.js';
import { removeStaleTemporaries } from '../io/temp-name.js';

/**
 * One export: from a base model folder and a PEFT adapter, any of
 *   <out>/adapter/                     the adapter again, in PEFT's layout (always)
 *   <out>/merged/                      Hugging Face folder of the merged model (`merged`)
 *   <out>/<name>-<type>.gguf           merged model GGUF (`gguf`)
 *   <out>/<name>-base-<type>.gguf      base model GGUF, and <out>/<name>-lora.gguf (`loraGguf`)
 *   <out>/Modelfile                    FROM the merged GGUF; Modelfile.adapter: FROM the base GGUF
 *                                      with ADAPTER the LoRA GGUF (`modelfile`)
 * Before anything is written, the inputs are read and checked (config.json, adapter shapes, the
 * tokenizer), existing outputs are refused unless `force`, and the planned bytes are compared with
 * the free space of the output disk. Every file and folder is written under a temporary name and
 * renamed when complete, so a failure leaves no partial output.
 */

export interface ExportRequest {
  readonly modelDir: string;
  readonly adapterDir: string;
  readonly outDir: string;
  readonly gguf?: GgufFileType;
  readonly loraGguf?: boolean;
  readonly merged?: boolean;
  readonly modelfile?: boolean;
  readonly mergedDtype?: FolderDtype;
  readonly mergeBase?: MergeBase;
  readonly doubleQuant?: boolean;
  /** Model name (general.name, file names, `ollama create`); default: the output folder's name. */
  readonly name?: string;
  readonly force?: boolean;
  /** Modelfile settings (the run's system_prompt, user_prefix, enable_thinking). */
  readonly settings: ModelfileSettings;
  readonly log?: (line: string) => void;
  /** Worker threads encoding the weights (default: the machine's cores, at most 16). */
  readonly threads?: number;
}

export interface ExportedFile {
  readonly path: string;
  readonly bytes: number;
  readonly what: string;
}

export interface ExportResult {
  readonly files: ExportedFile[];
  /** The `ollama create` command line, when a Modelfile was written. */
  readonly ollamaCreate?: string;
}

/** Free-space margin kept on the output disk beyond the planned bytes. */
const SPACE_MARGIN = 64 * 1024 * 1024;

interface Output {
  readonly path: string;
  readonly what: string;
  readonly bytes: number;
  /** Absent for a file that is already in place (the adapter a run saved into <out>/adapter). */
  readonly write?: () => Promise<void>;
}

export async function runExportRequest(req: ExportRequest): Promise<ExportResult> {
  const log = req.log ?? (() => {});
  const out = resolve(req.outDir);
  const name = req.name ?? basename(out);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new ConfigError(`--name "${name}": use letters, digits, ".", "_" and "-" (it names files and the Ollama model)`);
  }
  const config = await readQwen3Config(req.modelDir);
  const adapter = await readPeftAdapter(req.adapterDir, config);
  const tokenizer = await QwenTokenizer.load(req.modelDir);
  const tokenizerDir = tokenizerSourceDir(req.modelDir);
  const ggufTokenizer = await readGgufTokenizer(tokenizerDir, config, tokenizer.chatTemplate);
  const mergeOptions = { base: req.mergeBase ?? 'original', doubleQuant: req.doubleQuant ?? false } as const;
  const modelfile = req.modelfile ?? false;
  const ggufType = req.gguf ?? (modelfile ? 'q8_0' : undefined);
  const baseType: GgufFileType = req.gguf ?? 'f16';

  const outputs: Output[] = [];
  const pool = QuantizePool.create({ threads: req.threads });
  const weights = await MergedWeights.open(req.modelDir, adapter, mergeOptions);
  const baseWeights = req.loraGguf ? await MergedWeights.open(req.modelDir, undefined, mergeOptions) : undefined;
  try {
    const adapterBytes = adapter.layers.reduce((a, l) => a + Object.values(l).reduce((b, p) => b + 4 * (p.a.length + p.b.length), 0), 0);
    // A run's export reads the adapter the run just saved in <out>/adapter: it is listed, not rewritten.
    const adapterInPlace = resolve(req.adapterDir) === join(out, 'adapter');
    outputs.push({
      path: join(out, 'adapter'),
      what: 'PEFT adapter',
      bytes: adapterInPlace ? 0 : adapterBytes + 8192,
      write: adapterInPlace ? undefined : () => savePeftAdapter(join(out, 'adapter'), adapter, { baseModel: baseModelName(adapter.rawConfig, req.modelDir), overwrite: req.force }),
    });
    if (req.merged) {
      const dtype = req.mergedDtype ?? 'source';
      const bytes = weights.names().reduce((a, n) => {
        const info = weights.info(n);
        const item = dtype === 'f32' ? 4 : dtype === 'source' ? (info.dtype === 'F32' ? 4 : 2) : 2;
        return a + item * info.shape.reduce((x, d) => x * d, 1);
      }, 0);
      outputs.push({
        path: join(out, 'merged'),
        what: `merged model, Hugging Face folder (${dtype === 'source' ? (config.torchDtype ?? 'source dtype') : dtype})`,
        bytes: bytes + 16 * 1024 * 1024,
        write: async () => {
          await writeHfFolder(join(out, 'merged'), weights, { dtype, tokenizerDir, overwrite: req.force, pool });
        },
      });
    }
    const ggufName = ggufType ? `${name}-${ggufType}.gguf` : undefined;
    if (ggufType && ggufName) {
      const options = { fileType: ggufType, name, tokenizer: ggufTokenizer, pool, onTensor: progress(log, ggufName) };
      outputs.push({
        path: join(out, ggufName),
        what: `merged model GGUF (${ggufType})`,
        bytes: qwen3GgufBytes(weights, options),
        write: async () => {
          await writeQwen3Gguf(join(out, ggufName), weights, options);
        },
      });
    }
    const baseName = `${name}-base-${baseType}.gguf`;
    const loraName = `${name}-lora.gguf`;
    if (baseWeights) {
      const options = { fileType: baseType, name: `${name}-base`, tokenizer: ggufTokenizer, pool, onTensor: progress(log, baseName) };
      outputs.push({
        path: join(out, baseName),
        what: `base model GGUF (${baseType}${mergeOptions.base === 'nf4' ? ', NF4-dequantised' : ''}) for the LoRA GGUF`,
        bytes: qwen3GgufBytes(baseWeights, options),
        write: async () => {
          await writeQwen3Gguf(join(out, baseName), baseWeights, options);
        },
      });
      outputs.push({
        path: join(out, loraName),
        what: 'LoRA adapter GGUF (llama.cpp --lora, Ollama ADAPTER)',
        bytes: loraGgufBytes(config, adapter, { name: `${name}-lora` }),
        write: () => writeLoraGguf(join(out, loraName), config, adapter, { name: `${name}-lora` }),
      });
    }
    const render = (m: Parameters<QwenTokenizer['renderChat']>[0], o?: Parameters<QwenTokenizer['renderChat']>[1]): string => tokenizer.renderChat(m, o);
    const comments = [`Generated by prompt-lora export from ${resolve(req.modelDir)} + ${resolve(req.adapterDir)}.`];
    if (modelfile && ggufName) {
      const text = buildModelfile(render, req.settings, { from: `./${ggufName}` }, comments);
      outputs.push({ path: join(out, 'Modelfile'), what: 'Ollama Modelfile (merged GGUF)', bytes: Buffer.byteLength(text), write: () => writeTextFile(join(out, 'Modelfile'), text, req.force) });
    }
    if (modelfile && baseWeights) {
      const text = buildModelfile(render, req.settings, { from: `./${baseName}`, adapter: `./${loraName}` }, comments);
      outputs.push({
        path: join(out, 'Modelfile.adapter'),
        what: 'Ollama Modelfile, ADAPTER variant (Ollama ≥ 0.30 for qwen3)',
        bytes: Buffer.byteLength(text),
        write: () => writeTextFile(join(out, 'Modelfile.adapter'), text, req.force),
      });
    }

    if (!req.force) {
      const existing = outputs.filter((o) => o.write && existsSync(o.path)).map((o) => o.path);
      if (existing.length > 0) throw new ExportError(`${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}; remove, choose another --out, or pass --force`);
    }
    await mkdir(out, { recursive: true });
    await removeStaleTemporaries(out); // what a killed earlier export left
    await checkFreeSpace(out, outputs.reduce((a, o) => a + o.bytes, 0));

    for (const o of outputs) {
      if (!o.write) continue;
      log(`writing ${o.path} (${o.what})`);
      await o.write();
    }
  } finally {
    await pool.close();
    await weights.close();
    await baseWeights?.close();
  }
  const files = outputs.map((o) => ({ path: o.path, what: o.what, bytes: pathBytes(o.path) }));
  const ollamaCreate = modelfile ? `ollama create ${name} -f ${join(out, 'Modelfile')}` : undefined;
  return { files, ollamaCreate };
}

/** The adapter's own base_model_name_or_path when set, else the base folder given. */
function baseModelName(raw: Readonly<Record<string, unknown>> | undefined, modelDir: string): string {
  const v = raw?.base_model_name_or_path;
  return typeof v === 'string' && v !== '' ? v : resolve(modelDir);
}

function progress(log: (line: string) => void, file: string): (t: { name: string }, done: number, total: number) => void {
  return (t, done, total) => {
    if (done === total || done % 50 === 0) log(`  ${file}: ${done}/${total} tensors (${t.name})`);
  };
}

/** Writes a small text file through a temporary name (the shared atomic writer). */
async function writeTextFile(path: string, text: string, force = false): Promise<void> {
  if (!force && existsSync(path)) throw new ExportError(`${path} already exists; remove it or pass --force`);
  await writeFileAtomic(path, text);
}

/**
 * Refuses to start when the output disk has less free space than the planned bytes plus a margin;
 * nothing to write (0 bytes: e.g. only the adapter already in place) needs no space and no margin.
 */
export async function checkFreeSpace(dir: string, bytes: number, fsStat: (path: string) => Promise<{ bavail: number | bigint; bsize: number | bigint }> = statfs): Promise<void> {
  if (bytes <= 0) return;
  let probe = dir;
  while (!existsSync(probe) && dirname(probe) !== probe) probe = dirname(probe);
  let free: number;
  try {
    const s = await fsStat(probe);
    free = Number(s.bavail) * Number(s.bsize);
  } catch {
    return; // a file system that cannot tell: the writers still fail cleanly on ENOSPC
  }
  if (free < bytes + SPACE_MARGIN) {
    throw new ExportError(`${dir}: the export needs about ${formatBytes(bytes)} (plus a ${formatBytes(SPACE_MARGIN)} margin) but only ${formatBytes(free)} is free on that disk; free space or choose another --out`);
  }
}

/** Size of a file, or of every file under a folder. */
export function pathBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((a, f) => a + pathBytes(join(path, f)), 0);
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}
