import { copyFile, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsWriter } from './safetensors-writer.js';
import type { TensorSource } from './tensor-source.js';

/**
 * Writes a TensorSource as a Hugging Face model folder: config.json (the source config's raw JSON),
 * one model.safetensors streamed tensor by tensor, and optional extra files (e.g. tokenizer files).
 * The folder is built under `<dir>.tmp-<pid>` and renamed when complete, so a crash leaves no
 * half-written model behind.
 */
export async function writeCheckpoint(source: TensorSource, dir: string, extraFiles: Readonly<Record<string, string>> = {}): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await writeFile(join(tmp, 'config.json'), JSON.stringify(source.config.raw, null, 2) + '\n');
    const names = source.names();
    const writer = await SafetensorsWriter.create(
      join(tmp, 'model.safetensors'),
      names.map((name) => ({ name, dtype: source.info(name).dtype, shape: source.info(name).shape })),
      { format: 'pt' },
    );
    try {
      for (const name of names) for await (const chunk of source.readChunks(name)) await writer.write(name, chunk.bytes);
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    for (const [target, from] of Object.entries(extraFiles)) await copyFile(from, join(tmp, target));
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}
