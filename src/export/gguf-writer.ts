import { ExportError } from '../errors.js';
import { AtomicFile, type AtomicFileOptions } from '../io/atomic-file.js';
import { GGML_TYPES, rowBytes, type GgmlType } from './gguf-quants.js';

/**
 * Streaming GGUF v3 writer, a small state machine like SafetensorsWriter:
 *
 *   create(path, metadata, tensors)   validates the declarations, writes the header (magic, version,
 *                                     counts, key/value pairs, tensor infos with offsets) and the
 *                                     padding to `<path>.tmp-<pid>` (an AtomicFile)     → open
 *   write(name, bytes) …              tensor data in declaration order, each tensor in as many
 *                                     pieces as wanted; zero padding to the alignment is written
 *                                     after each tensor                                  (open)
 *   finish()                          checks every byte was written, fsyncs, renames   → finished
 *   abort()                           removes the temporary file                        → aborted
 *
 * Layout (little-endian): u32 magic "GGUF", u32 version 3, u64 tensor count, u64 kv count; each kv:
 * string key, u32 value type, value; each tensor: string name, u32 n_dims, u64 ne[n_dims] (ne[0] the
 * fastest dimension), u32 ggml type, u64 offset relative to the data section; zero padding to
 * `alignment`; the data, each tensor padded to the alignment. Strings are u64 length + UTF-8.
 * Value types are written exactly as declared (llama.cpp refuses a U32 key written as I32).
 */

export type GgufScalarType = 'U8' | 'I8' | 'U16' | 'I16' | 'U32' | 'I32' | 'F32' | 'BOOL' | 'STRING' | 'U64' | 'I64' | 'F64';

const VALUE_TYPE_ID: Record<GgufScalarType | 'ARRAY', number> = {
  U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12,
};

export type GgufScalar = number | bigint | boolean | string;

export type GgufValue =
  | { readonly type: GgufScalarType; readonly value: GgufScalar }
  | { readonly type: 'ARRAY'; readonly itemType: GgufScalarType; readonly value: readonly GgufScalar[] };

/** Constructors of typed metadata values. */
export const gguf = {
  u32: (value: number): GgufValue => ({ type: 'U32', value }),
  i32: (value: number): GgufValue => ({ type: 'I32', value }),
  f32: (value: number): GgufValue => ({ type: 'F32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'BOOL', value }),
  str: (value: string): GgufValue => ({ type: 'STRING', value }),
  strs: (value: readonly string[]): GgufValue => ({ type: 'ARRAY', itemType: 'STRING', value }),
  i32s: (value: readonly number[]): GgufValue => ({ type: 'ARRAY', itemType: 'I32', value }),
};

export interface GgufTensorDecl {
  /** GGUF tensor name, fewer than 64 bytes (e.g. `blk.0.attn_q.weight`). */
  readonly name: string;
  /** Dimensions, fastest first: a row-major (out, in) matrix is ne = [in, out]. */
  readonly ne: readonly number[];
  readonly type: GgmlType;
}

/** Bytes of a tensor's data (whole rows of ne[0] elements). */
export function tensorBytes(t: GgufTensorDecl, where = 'tensorBytes'): number {
  const rows = t.ne.slice(1).reduce((a, d) => a * d, 1);
  return rowBytes(t.type, t.ne[0], `${where}: tensor "${t.name}"`) * rows;
}

export const GGUF_MAGIC = 0x46554747;
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
const MAX_NAME_BYTES = 63;

export type GgufWriterState = 'open' | 'finished' | 'aborted' | 'failed';

const ENCODER = new TextEncoder();

/** Appends little-endian values to a list of byte chunks. */
class ByteSink {
  readonly parts: Uint8Array[] = [];
  length = 0;
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private used = 0;

  private room(n: number): void {
    if (this.used + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) {
      this.buf = new Uint8Array(n);
      this.view = new DataView(this.buf.buffer);
    }
  }
  flush(): void {
    if (this.used === 0) return;
    this.parts.push(this.buf.slice(0, this.used));
    this.used = 0;
  }
  u8(v: number): void { this.room(1); this.view.setUint8(this.used, v); this.used += 1; this.length += 1; }
  i8(v: number): void { this.room(1); this.view.setInt8(this.used, v); this.used += 1; this.length += 1; }
  u16(v: number): void { this.room(2); this.view.setUint16(this.used, v, true); this.used += 2; this.length += 2; }
  i16(v: number): void { this.room(2); this.view.setInt16(this.used, v, true); this.used += 2; this.length += 2; }
  u32(v: number): void { this.room(4); this.view.setUint32(this.used, v, true); this.used += 4; this.length += 4; }
  i32(v: number): void { this.room(4); this.view.setInt32(this.used, v, true); this.used += 4; this.length += 4; }
  f32(v: number): void { this.room(4); this.view.setFloat32(this.used, v, true); this.used += 4; this.length += 4; }
  f64(v: number): void { this.room(8); this.view.setFloat64(this.used, v, true); this.used += 8; this.length += 8; }
  u64(v: number | bigint): void { this.room(8); this.view.setBigUint64(this.used, BigInt(v), true); this.used += 8; this.length += 8; }
  i64(v: number | bigint): void { this.room(8); this.view.setBigInt64(this.used, BigInt(v), true); this.used += 8; this.length += 8; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.used); this.used += b.length; this.length += b.length; }
  str(s: string): void {
    // UTF-8 needs at most 3 bytes per UTF-16 code unit: encode in place after the length.
    this.room(8 + 3 * s.length);
    const { written } = ENCODER.encodeInto(s, this.buf.subarray(this.used + 8));
    this.view.setBigUint64(this.used, BigInt(written), true);
    this.used += 8 + written;
    this.length += 8 + written;
  }
}

function checkScalar(type: GgufScalarType, v: GgufScalar, where: string): void {
  const ok =
    type === 'STRING' ? typeof v === 'string'
    : type === 'BOOL' ? typeof v === 'boolean'
    : type === 'U64' || type === 'I64' ? typeof v === 'bigint' || Number.isSafeInteger(v)
    : type === 'F32' || type === 'F64' ? typeof v === 'number'
    : typeof v === 'number' && Number.isInteger(v) && inRange(type, v);
  if (!ok) throw new ExportError(`${where}: ${JSON.stringify(typeof v === 'bigint' ? String(v) : v)} is not a valid ${type}`);
}

function inRange(type: GgufScalarType, v: number): boolean {
  const ranges: Partial<Record<GgufScalarType, [number, number]>> = {
    U8: [0, 255], I8: [-128, 127], U16: [0, 65535], I16: [-32768, 32767], U32: [0, 2 ** 32 - 1], I32: [-(2 ** 31), 2 ** 31 - 1],
  };
  const [lo, hi] = ranges[type]!;
  return v >= lo && v <= hi;
}

function writeScalar(s: ByteSink, type: GgufScalarType, v: GgufScalar): void {
  switch (type) {
    case 'U8': return s.u8(v as number);
    case 'I8': return s.i8(v as number);
    case 'U16': return s.u16(v as number);
    case 'I16': return s.i16(v as number);
    case 'U32': return s.u32(v as number);
    case 'I32': return s.i32(v as number);
    case 'F32': return s.f32(v as number);
    case 'F64': return s.f64(v as number);
    case 'BOOL': return s.u8(v ? 1 : 0);
    case 'STRING': return s.str(v as string);
    case 'U64': return s.u64(v as number | bigint);
    case 'I64': return s.i64(v as number | bigint);
  }
}

export class GgufWriter {
  private current = 0;
  private writtenOfCurrent = 0;

  private constructor(
    readonly path: string,
    private readonly file: AtomicFile,
    private readonly tensors: readonly GgufTensorDecl[],
    private readonly sizes: readonly number[],
    private readonly alignment: number,
  ) {}

  get state(): GgufWriterState {
    return this.file.state;
  }

  /** The temporary file written until finish(). */
  get tempPath(): string {
    return this.file.tempPath;
  }

  /** Tensors completely written so far. */
  get completed(): number {
    return this.current;
  }

  /** Total bytes the finished file will have for these declarations (for disk-space checks). */
  static plannedBytes(metadata: Iterable<readonly [string, GgufValue]>, tensors: readonly GgufTensorDecl[], alignment?: number): number {
    const { header, align } = encodeHeader('plannedBytes', metadata, tensors, alignment);
    return header.length + tensors.reduce((a, t) => a + padTo(tensorBytes(t), align), 0);
  }

  /**
   * Validates the declarations, creates the temporary file and writes the header. The alignment is
   * `general.alignment` of the metadata when given (U32), else `alignment`, else 32. `options.fs`
   * replaces the file system (tests inject faults through it).
   */
  static async create(
    path: string,
    metadata: Iterable<readonly [string, GgufValue]>,
    tensors: readonly GgufTensorDecl[],
    alignment?: number,
    options: Pick<AtomicFileOptions, 'fs'> = {},
  ): Promise<GgufWriter> {
    const { header, sizes, align } = encodeHeader(path, metadata, tensors, alignment);
    const file = await AtomicFile.create(path, { fs: options.fs, error: (m, o) => new ExportError(m, o) });
    const w = new GgufWriter(path, file, tensors.map((t) => ({ ...t, ne: [...t.ne] })), sizes, align);
    try {
      for (const part of header.parts) await file.write(part, 'writing the header');
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w;
  }

  /** Appends `bytes` to tensor `name`, which must be the tensor currently being written. */
  async write(name: string, bytes: ArrayBufferView): Promise<void> {
    this.expectOpen(`write("${name}")`);
    const data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const idx = this.tensors.findIndex((t) => t.name === name);
    if (idx < 0) throw new ExportError(`${this.path}: write("${name}"): no such tensor was declared`);
    if (idx < this.current) throw new ExportError(`${this.path}: write("${name}"): the tensor is already complete (duplicate write)`);
    if (idx > this.current) {
      const cur = this.tensors[this.current];
      throw new ExportError(
        `${this.path}: write("${name}") out of order: tensor "${cur.name}" comes first and has ${this.sizes[this.current] - this.writtenOfCurrent} bytes still to write`,
      );
    }
    const remaining = this.sizes[idx] - this.writtenOfCurrent;
    if (data.byteLength > remaining) {
      throw new ExportError(`${this.path}: write("${name}"): ${data.byteLength} bytes given but only ${remaining} of its ${this.sizes[idx]} bytes remain`);
    }
    await this.append(`writing tensor "${name}"`, data);
    this.writtenOfCurrent += data.byteLength;
    if (this.writtenOfCurrent === this.sizes[idx]) {
      const pad = padTo(this.sizes[idx], this.alignment) - this.sizes[idx];
      if (pad > 0) await this.append(`padding after "${name}"`, new Uint8Array(pad));
      this.current++;
      this.writtenOfCurrent = 0;
    }
  }

  /** Checks every tensor is complete, fsyncs, closes and renames the temporary file to `path`. */
  async finish(): Promise<void> {
    this.expectOpen('finish()');
    if (this.current < this.tensors.length) {
      const cur = this.tensors[this.current];
      throw new ExportError(
        `${this.path}: finish() before all data was written: tensor "${cur.name}" has ${this.writtenOfCurrent} of ${this.sizes[this.current]} bytes ` +
          `(${this.tensors.length - this.current} of ${this.tensors.length} tensors incomplete)`,
      );
    }
    await this.file.finish();
  }

  /** Closes and removes the temporary file; does nothing once finished or aborted. */
  async abort(): Promise<void> {
    await this.file.abort();
  }

  private async append(what: string, data: Uint8Array): Promise<void> {
    await this.file.write(data, what);
  }

  private expectOpen(call: string): void {
    const state = this.file.state;
    if (state !== 'open') {
      const hint = state === 'failed' ? '; an earlier write failed, call abort()' : '';
      throw new ExportError(`${this.path}: ${call} refused: the writer is ${state}${hint}`);
    }
  }
}

function padTo(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** The header bytes (including the padding before the data) and each tensor's data size. */
function encodeHeader(
  where: string,
  metadata: Iterable<readonly [string, GgufValue]>,
  tensors: readonly GgufTensorDecl[],
  requested: number | undefined,
): { header: ByteSink; sizes: number[]; align: number } {
  const kvs = [...metadata];
  const keys = new Set<string>();
  for (const [key, value] of kvs) {
    if (key.length === 0) throw new ExportError(`${where}: an empty metadata key`);
    if (keys.has(key)) throw new ExportError(`${where}: metadata key "${key}" is given twice`);
    keys.add(key);
    if (value.type === 'ARRAY') value.value.forEach((v, i) => checkScalar(value.itemType, v, `${where}: metadata "${key}"[${i}]`));
    else checkScalar(value.type, value.value, `${where}: metadata "${key}"`);
  }
  const declared = kvs.find(([k]) => k === 'general.alignment')?.[1];
  if (declared && declared.type !== 'U32') throw new ExportError(`${where}: general.alignment must be a U32, found ${declared.type}`);
  const alignment = declared ? (declared.value as number) : (requested ?? GGUF_DEFAULT_ALIGNMENT);
  if (requested !== undefined && requested !== alignment) throw new ExportError(`${where}: alignment ${requested} disagrees with general.alignment ${alignment}`);
  if (!declared && alignment !== GGUF_DEFAULT_ALIGNMENT) throw new ExportError(`${where}: an alignment of ${alignment} must be declared as general.alignment (U32); readers assume ${GGUF_DEFAULT_ALIGNMENT}`);
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) throw new ExportError(`${where}: alignment ${alignment} must be a positive multiple of 8`);
  const names = new Set<string>();
  const sizes: number[] = [];
  for (const t of tensors) {
    if (names.has(t.name)) throw new ExportError(`${where}: tensor "${t.name}" is declared twice`);
    names.add(t.name);
    if (new TextEncoder().encode(t.name).length > MAX_NAME_BYTES) throw new ExportError(`${where}: tensor name "${t.name}" is longer than ${MAX_NAME_BYTES} bytes`);
    if (!(t.type in GGML_TYPES)) throw new ExportError(`${where}: tensor "${t.name}": unknown ggml type ${String(t.type)}`);
    if (t.ne.length < 1 || t.ne.length > 4 || !t.ne.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new ExportError(`${where}: tensor "${t.name}": ne [${t.ne.join(', ')}] must be 1 to 4 positive integers`);
    }
    sizes.push(tensorBytes(t, where));
  }

  const s = new ByteSink();
  s.u32(GGUF_MAGIC);
  s.u32(GGUF_VERSION);
  s.u64(tensors.length);
  s.u64(kvs.length);
  for (const [key, value] of kvs) {
    s.str(key);
    s.u32(VALUE_TYPE_ID[value.type]);
    if (value.type === 'ARRAY') {
      s.u32(VALUE_TYPE_ID[value.itemType]);
      s.u64(value.value.length);
      for (const v of value.value) writeScalar(s, value.itemType, v);
    } else {
      writeScalar(s, value.type, value.value);
    }
  }
  let offset = 0;
  tensors.forEach((t, i) => {
    s.str(t.name);
    s.u32(t.ne.length);
    for (const d of t.ne) s.u64(d);
    s.u32(GGML_TYPES[t.type].id);
    s.u64(offset);
    offset += padTo(sizes[i], alignment);
  });
  const pad = padTo(s.length, alignment) - s.length;
  if (pad > 0) s.bytes(new Uint8Array(pad));
  s.flush();
  return { header: s, sizes, align: alignment };
}
