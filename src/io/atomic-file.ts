import { open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { temporaryName } from './temp-name.js';
import { ExportError, type TrainerError } from '../errors.js';

/**
 * A file that appears under its final name only when complete, a small state machine:
 *
 *   AtomicFile.create(path)   opens `<path>.tmp-<pid>` (exclusive create)            → open
 *   write(bytes) …            appends                                                (open)
 *   finish()                  fsync, close, rename to `path`, fsync the folder      → finished
 *   abort()                   closes and removes the temporary file                 → aborted
 *
 * A failed I/O call leaves the file `failed`: only abort() is then accepted. Calls out of order
 * are refused. Used by the safetensors and GGUF writers (which add their own layout checks on top)
 * and by the training checkpoint writer.
 *
 * The file system is an argument (`fs`, default node:fs/promises) so that tests can inject faults
 * such as ENOSPC; errors are made by `error` (default ExportError) so each user reports in its
 * own kind.
 */

/** The part of a node:fs FileHandle an AtomicFile uses. */
export interface WritableHandle {
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** The file-system calls an AtomicFile makes (node:fs/promises by default). */
export interface FileSystem {
  open(path: string, flags: string): Promise<WritableHandle>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
}

export const NODE_FS: FileSystem = { open, rename, unlink };

export type AtomicFileState = 'open' | 'finished' | 'aborted' | 'failed';

/** Builds the error thrown for `message` (e.g. `(m, o) => new CheckpointError(m, o)`). */
export type ErrorFactory = (message: string, options: { cause?: unknown }) => TrainerError;

export interface AtomicFileOptions {
  readonly fs?: FileSystem;
  readonly error?: ErrorFactory;
}

/** Writes are split into pieces of at most this many bytes (node's per-call limit is 2 GiB). */
const MAX_WRITE = 1 << 30;

/** True when `e` or one of its causes is "no space left on device". */
export function isNoSpaceError(e: unknown): boolean {
  for (let x = e, depth = 0; x && depth < 8; x = (x as { cause?: unknown }).cause, depth++) {
    if ((x as NodeJS.ErrnoException).code === 'ENOSPC') return true;
  }
  return false;
}

export class AtomicFile {
  private handle: WritableHandle | undefined;
  private stateNow: AtomicFileState = 'open';
  private position = 0;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    handle: WritableHandle,
    private readonly fs: FileSystem,
    private readonly error: ErrorFactory,
  ) {
    this.handle = handle;
  }

  static async create(path: string, options: AtomicFileOptions = {}): Promise<AtomicFile> {
    const fs = options.fs ?? NODE_FS;
    const error = options.error ?? ((m, o) => new ExportError(m, o));
    const tempPath = temporaryName(path);
    let handle: WritableHandle;
    try {
      handle = await fs.open(tempPath, 'wx');
    } catch (e) {
      throw error(`${path}: cannot create the temporary file ${tempPath} (${(e as Error).message})${noSpaceHint(e)}`, { cause: e });
    }
    return new AtomicFile(path, tempPath, handle, fs, error);
  }

  get state(): AtomicFileState {
    return this.stateNow;
  }

  /** Bytes written so far. */
  get size(): number {
    return this.position;
  }

  /** Appends `data`; `what` names the part in an error message (e.g. `writing tensor "x"`). */
  async write(data: Uint8Array, what = 'writing'): Promise<void> {
    this.expectOpen(`${what}`);
    const h = this.handle!;
    const at = this.position;
    await this.io(what, async () => {
      let done = 0;
      while (done < data.byteLength) {
        const { bytesWritten } = await h.write(data, done, Math.min(data.byteLength - done, MAX_WRITE), at + done);
        done += bytesWritten;
      }
    });
    this.position += data.byteLength;
  }

  /** fsync, close, rename to `path`, then fsync the folder so the rename is durable. */
  async finish(): Promise<void> {
    this.expectOpen('finish()');
    const h = this.handle!;
    await this.io('syncing', () => h.sync());
    await this.io('closing', () => h.close());
    this.handle = undefined;
    await this.io(`renaming ${this.tempPath} to ${this.path}`, () => this.fs.rename(this.tempPath, this.path));
    await syncDirectory(this.fs, dirname(this.path));
    this.stateNow = 'finished';
  }

  /** Closes and removes the temporary file; does nothing once finished or aborted (safe in `finally`). */
  async abort(): Promise<void> {
    if (this.stateNow === 'finished' || this.stateNow === 'aborted') return;
    this.stateNow = 'aborted';
    const h = this.handle;
    this.handle = undefined;
    try {
      if (h) await h.close().catch(() => undefined);
    } finally {
      await this.fs.unlink(this.tempPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw this.error(`${this.path}: abort(): cannot remove ${this.tempPath} (${e.message})`, { cause: e });
      });
    }
  }

  private expectOpen(call: string): void {
    if (this.stateNow !== 'open') {
      const hint = this.stateNow === 'failed' ? '; an earlier write failed, call abort()' : '';
      throw this.error(`${this.path}: ${call} refused: the writer is ${this.stateNow}${hint}`, {});
    }
  }

  private async io<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      this.stateNow = 'failed';
      throw this.error(`${this.path}: ${what} failed (${(e as Error).message})${noSpaceHint(e)}; call abort() to remove ${this.tempPath}`, { cause: e });
    }
  }
}

function noSpaceHint(e: unknown): string {
  return isNoSpaceError(e) ? ' — no space left on the device; free space or write elsewhere' : '';
}

/** Writes a whole file atomically (temporary name, fsync, rename); on failure nothing is left. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, options: AtomicFileOptions = {}): Promise<void> {
  const file = await AtomicFile.create(path, options);
  try {
    await file.write(typeof data === 'string' ? new TextEncoder().encode(data) : data, 'writing');
    await file.finish();
  } finally {
    await file.abort();
  }
}

/**
 * fsync of the folder makes a rename durable on Linux. Some platforms and file systems refuse to
 * open or sync a folder; the file itself is already synced, so that refusal is not an error.
 */
async function syncDirectory(fs: FileSystem, dir: string): Promise<void> {
  let h: WritableHandle | undefined;
  try {
    h = await fs.open(dir, 'r');
    await h.sync();
  } catch {
    // Not supported here (e.g. Windows, some network file systems): the data itself was synced.
  } finally {
    await h?.close().catch(() => undefined);
  }
}
