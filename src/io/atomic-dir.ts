import { mkdir, rename, rm } from 'node:fs/promises';
import { temporaryName } from './temp-name.js';
import { ExportError } from '../errors.js';

/**
 * Writes a folder atomically: `fill` writes its files into `<dir>.tmp-<pid>`, which is renamed to
 * `dir` when `fill` returns (an existing `dir` is replaced only with `overwrite`). On any failure the
 * temporary folder is removed and `dir` is left as it was: a crash never leaves a half folder under
 * the final name. Used by the PEFT adapter, the merged Hugging Face folder and the random model.
 */
export async function writeDirAtomic<T>(dir: string, options: { readonly overwrite: boolean }, fill: (temp: string) => Promise<T>): Promise<T> {
  const temp = temporaryName(dir);
  await rm(temp, { recursive: true, force: true });
  await mkdir(temp, { recursive: true });
  try {
    const result = await fill(temp);
    await replaceDir(temp, dir, options.overwrite);
    return result;
  } catch (e) {
    await rm(temp, { recursive: true, force: true });
    throw e;
  }
}

/** Renames the finished folder `temp` to `dir`; an existing `dir` is refused unless `overwrite`. */
export async function replaceDir(temp: string, dir: string, overwrite: boolean): Promise<void> {
  const old = temporaryName(dir, 'old');
  let moved = false;
  try {
    await rename(dir, old);
    moved = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new ExportError(`${dir}: cannot replace it (${(e as Error).message})`, { cause: e });
  }
  if (moved && !overwrite) {
    await rename(old, dir);
    throw new ExportError(`${dir} already exists; remove it, choose another --out, or pass --force to replace it`);
  }
  await rename(temp, dir);
  if (moved) await rm(old, { recursive: true, force: true });
}
