import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ExportError } from '../errors.js';
import { DTYPE_BYTES, isSafetensorsDtype, type SafetensorsDtype } from './safetensors.js';

/**
 * Streaming safetensors writer, a small state machine:
 *
 *   create(path, entries, metadata?)   declares every tensor up front, writes the header to
 *                                      `<path>.tmp-<pid>`                              → open
 *   write(name, bytes) …               the data, tensor by tensor in declaration order, each in
 *                                      as many pieces as wanted                         (open)
 *   finish()                           checks every byte was written, fsyncs, renames to `path`
 *                                                                                       → finished
 *   abort()                            closes and removes the temporary file           → aborted
 *
 * Out-of-order and duplicate writes, too many or too few bytes, and any call after finish/abort are
 * refused with an ExportError naming the file and tensor. A failed I/O call leaves the writer
 * `failed`: only abort() (which removes the temporary file) is then accepted.
 *
 * Layout: the header lists `__metadata__` first, then the tensors in declared order with contiguous
 * data_offsets; the JSON is padded with spaces to a multiple of 8 bytes (as the Rust library does)
 * so the data section starts 8-byte aligned.
 */

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
}

export type SafetensorsWriterState = 'open' | 'finished' | 'aborted' | 'failed';

export class SafetensorsWriter {
  private handle: FileHandle | undefined;
  private stateNow: SafetensorsWriterState = 'open';
  /** Index of the tensor being written (== entries.length when all are complete). */
  private current = 0;
  /** Bytes of `entries[current]` written so far. */
  private writtenOfCurrent = 0;
  /** Absolute file position of the next byte. */
  private position: number;

  private constructor(
    readonly path: string,
    readonly tempPath: string,
    handle: FileHandle,
    private readonly entries: readonly SafetensorsEntry[],
    private readonly sizes: readonly number[],
    dataStart: number,
  ) {
    this.handle = handle;
    this.position = dataStart;
  }

  get state(): SafetensorsWriterState {
    return this.stateNow;
  }

  /** Validates the declarations, creates the temporary file and writes the header. */
  static async create(path: string, entries: readonly SafetensorsEntry[], metadata: Readonly<Record<string, string>> = {}): Promise<SafetensorsWriter> {
    const header: Record<string, unknown> = {};
    if (Object.keys(metadata).length > 0) {
      for (const [k, v] of Object.entries(metadata)) {
        if (typeof v !== 'string') throw new ExportError(`${path}: metadata "${k}" must be a string, found ${typeof v}`);
      }
      header.__metadata__ = { ...metadata };
    }
    const sizes: number[] = [];
    const seen = new Set<string>();
    let offset = 0;
    for (const e of entries) {
      if (e.name === '__metadata__' || e.name.length === 0) throw new ExportError(`${path}: "${e.name}" is not a valid tensor name`);
      if (seen.has(e.name)) throw new ExportError(`${path}: tensor "${e.name}" is declared twice`);
      seen.add(e.name);
      if (!isSafetensorsDtype(e.dtype)) throw new ExportError(`${path}: tensor "${e.name}": unknown dtype ${String(e.dtype)}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`);
      if (!e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw new ExportError(`${path}: tensor "${e.name}": shape [${e.shape.join(', ')}] must hold non-negative integers`);
      }
      const bytes = e.shape.reduce((a, d) => a * d, DTYPE_BYTES[e.dtype]);
      if (!Number.isSafeInteger(bytes)) throw new ExportError(`${path}: tensor "${e.name}": shape [${e.shape.join(', ')}] is too large`);
      header[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [offset, offset + bytes] };
      sizes.push(bytes);
      offset += bytes;
    }
    const json = new TextEncoder().encode(JSON.stringify(header));
    const padded = Math.ceil(json.byteLength / 8) * 8;
    const head = new Uint8Array(8 + padded).fill(0x20);
    new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
    head.set(json, 8);

    const tempPath = `${path}.tmp-${process.pid}`;
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx');
    } catch (e) {
      throw new ExportError(`${path}: cannot create the temporary file ${tempPath} (${(e as Error).message})`, { cause: e });
    }
    const writer = new SafetensorsWriter(path, tempPath, handle, entries.map((e) => ({ ...e, shape: [...e.shape] })), sizes, head.byteLength);
    try {
      await writer.io('writing the header', () => writeFully(handle, head, 0));
    } catch (e) {
      await writer.abort();
      throw e;
    }
    writer.skipEmpty();
    return writer;
  }

  /**
   * Appends `bytes` (any typed array; its raw little-endian bytes are written) to tensor `name`,
   * which must be the tensor currently being written.
   */
  async write(name: string, bytes: ArrayBufferView): Promise<void> {
    this.expectOpen(`write("${name}")`);
    const data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const idx = this.entries.findIndex((e) => e.name === name);
    if (idx < 0) throw new ExportError(`${this.path}: write("${name}"): no such tensor was declared`);
    if (idx < this.current) throw new ExportError(`${this.path}: write("${name}"): the tensor is already complete (duplicate write)`);
    if (idx > this.current) {
      const cur = this.entries[this.current];
      throw new ExportError(
        `${this.path}: write("${name}") out of order: tensor "${cur.name}" comes first and has ${this.sizes[this.current] - this.writtenOfCurrent} bytes still to write`,
      );
    }
    const remaining = this.sizes[idx] - this.writtenOfCurrent;
    if (data.byteLength > remaining) {
      throw new ExportError(`${this.path}: write("${name}"): ${data.byteLength} bytes given but only ${remaining} of its ${this.sizes[idx]} bytes remain`);
    }
    const at = this.position;
    await this.io(`writing tensor "${name}"`, () => writeFully(this.handle!, data, at));
    this.position += data.byteLength;
    this.writtenOfCurrent += data.byteLength;
    if (this.writtenOfCurrent === this.sizes[idx]) {
      this.current++;
      this.writtenOfCurrent = 0;
      this.skipEmpty();
    }
  }

  /** Checks every tensor is complete, fsyncs, closes and renames the temporary file to `path`. */
  async finish(): Promise<void> {
    this.expectOpen('finish()');
    if (this.current < this.entries.length) {
      const cur = this.entries[this.current];
      const missing = this.sizes.slice(this.current).reduce((a, b) => a + b, 0) - this.writtenOfCurrent;
      throw new ExportError(
        `${this.path}: finish() before all data was written: tensor "${cur.name}" has ${this.writtenOfCurrent} of ${this.sizes[this.current]} bytes ` +
          `(${this.entries.length - this.current} tensors, ${missing} bytes missing)`,
      );
    }
    const h = this.handle!;
    await this.io('syncing', () => h.sync());
    await this.io('closing', () => h.close());
    this.handle = undefined;
    await this.io(`renaming ${this.tempPath} to ${this.path}`, () => rename(this.tempPath, this.path));
    await syncDirectory(dirname(this.path));
    this.stateNow = 'finished';
  }

  /**
   * Closes and removes the temporary file. Safe in a `finally`/`catch`: does nothing once the
   * writer is finished or already aborted.
   */
  async abort(): Promise<void> {
    if (this.stateNow === 'finished' || this.stateNow === 'aborted') return;
    this.stateNow = 'aborted';
    const h = this.handle;
    this.handle = undefined;
    try {
      if (h) await h.close();
    } finally {
      await unlink(this.tempPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw new ExportError(`${this.path}: abort(): cannot remove ${this.tempPath} (${e.message})`, { cause: e });
      });
    }
  }

  private expectOpen(call: string): void {
    if (this.stateNow !== 'open') {
      const hint = this.stateNow === 'failed' ? '; an earlier write failed, call abort()' : '';
      throw new ExportError(`${this.path}: ${call} refused: the writer is ${this.stateNow}${hint}`);
    }
  }

  /** Zero-byte tensors are complete as soon as they are reached. */
  private skipEmpty(): void {
    while (this.current < this.entries.length && this.sizes[this.current] === 0) this.current++;
  }

  private async io<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      this.stateNow = 'failed';
      throw new ExportError(`${this.path}: ${what} failed (${(e as Error).message}); call abort() to remove ${this.tempPath}`, { cause: e });
    }
  }
}

async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await handle.write(data, done, Math.min(data.byteLength - done, 1 << 30), position + done);
    done += bytesWritten;
  }
}

/**
 * fsync of the directory makes the rename durable on Linux. Some platforms and file systems refuse
 * to open or sync a directory; the file itself is already synced, so that refusal is not an error.
 */
async function syncDirectory(dir: string): Promise<void> {
  let h: FileHandle | undefined;
  try {
    h = await open(dir, 'r');
    await h.sync();
  } catch {
    // Not supported here (e.g. Windows, some network file systems): the data itself was synced.
  } finally {
    await h?.close();
  }
}
