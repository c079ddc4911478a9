import { ExportError } from '../errors.js';
import { AtomicFile, type AtomicFileOptions } from '../io/atomic-file.js';
import { DTYPE_BYTES, isSafetensorsDtype, type SafetensorsDtype } from './safetensors.js';

/**
 * Streaming safetensors writer, a small state machine:
 *
 *   create(path, entries, metadata?)   declares every tensor up front, writes the header to
 *                                      `<path>.tmp-<pid>` (an AtomicFile)              → open
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
  /** Index of the tensor being written (== entries.length when all are complete). */
  private current = 0;
  /** Bytes of `entries[current]` written so far. */
  private writtenOfCurrent = 0;

  private constructor(
    readonly path: string,
    private readonly file: AtomicFile,
    private readonly entries: readonly SafetensorsEntry[],
    private readonly sizes: readonly number[],
  ) {}

  get state(): SafetensorsWriterState {
    return this.file.state;
  }

  /** The temporary file written until finish(). */
  get tempPath(): string {
    return this.file.tempPath;
  }

  /**
   * Validates the declarations, creates the temporary file and writes the header. `options.fs`
   * replaces the file system (tests inject faults through it).
   */
  static async create(
    path: string,
    entries: readonly SafetensorsEntry[],
    metadata: Readonly<Record<string, string>> = {},
    options: Pick<AtomicFileOptions, 'fs'> = {},
  ): Promise<SafetensorsWriter> {
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

    const file = await AtomicFile.create(path, { fs: options.fs, error: (m, o) => new ExportError(m, o) });
    const writer = new SafetensorsWriter(path, file, entries.map((e) => ({ ...e, shape: [...e.shape] })), sizes);
    try {
      await file.write(head, 'writing the header');
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
    await this.file.write(data, `writing tensor "${name}"`);
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
    await this.file.finish();
  }

  /**
   * Closes and removes the temporary file. Safe in a `finally`/`catch`: does nothing once the
   * writer is finished or already aborted.
   */
  async abort(): Promise<void> {
    await this.file.abort();
  }

  private expectOpen(call: string): void {
    const state = this.file.state;
    if (state !== 'open') {
      const hint = state === 'failed' ? '; an earlier write failed, call abort()' : '';
      throw new ExportError(`${this.path}: ${call} refused: the writer is ${state}${hint}`);
    }
  }

  /** Zero-byte tensors are complete as soon as they are reached. */
  private skipEmpty(): void {
    while (this.current < this.entries.length && this.sizes[this.current] === 0) this.current++;
  }
}
