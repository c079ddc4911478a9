import { existsSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DTYPE_BYTES, type SafetensorsDtype } from '../model/safetensors.js';
import { SafetensorsWriter, type SafetensorsEntry } from '../model/safetensors-writer.js';
import type { GgmlType } from './gguf-quants.js';
import { encodeInOrder, QuantizePool, type NamedJob } from './quantize-pool.js';
import type { WeightStream } from './merge.js';
import { writeDirAtomic } from '../io/atomic-dir.js';
import { copyTokenizerFiles } from './tokenizer-files.js';

/**
 * Writes a Hugging Face model folder from a weight stream (usually the merged model):
 *   the safetensors shards in the source checkpoint's layout (same file names, same tensors in
 *   each; sorted names inside a file, metadata {"format": "pt"}) plus model.safetensors.index.json
 *   when sharded; config.json (the source's, its dtype key set to the output dtype);
 *   generation_config.json (copied when present); the tokenizer files (tokenizer-files.ts).
 * Each shard streams through SafetensorsWriter in row chunks, so at most one chunk of one tensor
 * is in memory. Everything goes to `<outDir>.tmp-<pid>`, renamed to outDir when complete.
 */

export type FolderDtype = 'source' | 'bf16' | 'f16' | 'f32';

const TORCH_NAMES: Partial<Record<SafetensorsDtype, string>> = { BF16: 'bfloat16', F16: 'float16', F32: 'float32' };
const FOLDER_DTYPES: Record<Exclude<FolderDtype, 'source'>, SafetensorsDtype> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };

export interface HfFolderOptions {
  /** Output dtype of every tensor ('source': each tensor's own, bf16 for Qwen3 checkpoints). */
  readonly dtype?: FolderDtype;
  /** Folder of the tokenizer files to copy (tokenizerSourceDir). */
  readonly tokenizerDir: string;
  /** Replace an existing outDir. */
  readonly overwrite?: boolean;
  /** Encodes the chunks (default: a pool of its own, closed at the end). */
  readonly pool?: QuantizePool;
}

/** Values per encoding job. */
const CHUNK_ELEMENTS = 1 << 20;

/** The ggml encoding with the same bytes as each safetensors float dtype (bf16/f16 round to nearest even). */
const AS_GGML: Partial<Record<SafetensorsDtype, GgmlType>> = { BF16: 'BF16', F16: 'F16', F32: 'F32' };

/** Writes the folder; returns the files written (relative names). */
export async function writeHfFolder(outDir: string, weights: WeightStream, options: HfFolderOptions): Promise<string[]> {
  const pool = options.pool ?? QuantizePool.create();
  try {
    return await writeDirAtomic(outDir, { overwrite: options.overwrite ?? false }, async (temp) => {
      const outDtype = (name: string): SafetensorsDtype => {
        const d = options.dtype ?? 'source';
        return d === 'source' ? weights.info(name).dtype : FOLDER_DTYPES[d];
      };
      const byFile = new Map<string, string[]>();
      for (const name of weights.names()) {
        const file = weights.info(name).file;
        byFile.set(file, [...(byFile.get(file) ?? []), name]);
      }
      const files = [...byFile.keys()].sort();
      const weightMap: Record<string, string> = {};
      let totalSize = 0;
      for (const file of files) {
        const names = byFile.get(file)!.sort();
        const entries: SafetensorsEntry[] = names.map((name) => ({ name, dtype: outDtype(name), shape: weights.info(name).shape }));
        const writer = await SafetensorsWriter.create(join(temp, file), entries, { format: 'pt' });
        try {
          async function* jobs(): AsyncGenerator<NamedJob> {
            for (const e of entries) {
              const k = e.shape[e.shape.length - 1] ?? 1;
              for await (const c of weights.chunks(e.name, CHUNK_ELEMENTS, { deferDelta: true })) {
                yield { name: e.name, job: { type: AS_GGML[e.dtype]!, values: c.values, nPerRow: k, delta: c.delta, where: `${file}: ${e.name}` } };
              }
            }
          }
          await encodeInOrder(pool, jobs(), (name, bytes) => writer.write(name, bytes));
          for (const e of entries) {
            totalSize += e.shape.reduce((a, d) => a * d, DTYPE_BYTES[e.dtype]);
            weightMap[e.name] = file;
          }
          await writer.finish();
        } finally {
          await writer.abort();
        }
      }
      const written = [...files];
      if (files.length > 1 || files[0] !== 'model.safetensors') {
        const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
        await writeFile(join(temp, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sorted }, null, 2)}\n`);
        written.push('model.safetensors.index.json');
      }

      const config: Record<string, unknown> = structuredClone(weights.config.raw) as Record<string, unknown>;
      const dtypes = new Set(weights.names().map(outDtype));
      const torchName = dtypes.size === 1 ? TORCH_NAMES[[...dtypes][0]] : undefined;
      if (torchName) {
        if ('dtype' in config) config.dtype = torchName;
        if ('torch_dtype' in config || !('dtype' in config)) config.torch_dtype = torchName;
      }
      await writeFile(join(temp, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
      written.push('config.json');
      const gen = join(weights.dir, 'generation_config.json');
      if (existsSync(gen)) {
        await copyFile(gen, join(temp, 'generation_config.json'));
        written.push('generation_config.json');
      }
      written.push(...(await copyTokenizerFiles(options.tokenizerDir, temp)));
      return written;
    });
  } finally {
    if (!options.pool) await pool.close();
  }
}
