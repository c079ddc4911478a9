import { open, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import { CheckpointError } from '../errors.js';
import { bf16ToF32Array } from './bf16.js';

/**
 * Reader for the safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [0, 8)        u64 little-endian N, the header length in bytes
 *   [8, 8+N)      UTF-8 JSON: { name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {str: str} }
 *                 (writers pad it with spaces to a multiple of 8 bytes)
 *   [8+N, EOF)    the data section; data_offsets are relative to its start
 *
 * Every rule the reference Rust library enforces is checked when the file is opened, and each failure
 * is a CheckpointError naming the file and the tensor. The file is read through one fs file handle at
 * explicit positions: nothing but the header is read at open, and streaming a tensor holds one chunk.
 */

/** The element types this reader accepts, with their size in bytes. */
export const DTYPE_BYTES = {
  BF16: 2,
  F16: 2,
  F32: 4,
  F64: 8,
  I8: 1,
  U8: 1,
  I16: 2,
  I32: 4,
  I64: 8,
  BOOL: 1,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_BYTES;

/** The element types the model path (weights, norms) can use: readF32 converts these. */
export const FLOAT_DTYPES: readonly SafetensorsDtype[] = ['BF16', 'F16', 'F32'];

/** Default streaming chunk: 64 MiB, the peak host memory of streaming a tensor. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

/** Largest header we accept. The Rust library's limit is 100 MB too; real headers are kilobytes. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Largest single fs read: reads above 2 GiB fail in libuv, so larger ones are split. */
const MAX_READ_BYTES = 1 << 30;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Absolute byte position of the first element in the file (8 + N + data_offsets[0]). */
  readonly byteOffset: number;
  readonly byteLength: number;
}

/** One piece of a streamed tensor: `bytes` is a view of the reader's reusable buffer. */
export interface TensorChunk {
  /** Byte offset of this chunk within the tensor. */
  readonly offset: number;
  readonly bytes: Uint8Array;
}

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

export class SafetensorsFile {
  private handle: FileHandle | undefined;

  private constructor(
    readonly path: string,
    handle: FileHandle,
    /** Tensors in data order. */
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** The header's `__metadata__` (empty when absent). */
    readonly metadata: Readonly<Record<string, string>>,
    /** Size of the whole file in bytes. */
    readonly fileSize: number,
  ) {
    this.handle = handle;
  }

  /** Opens `path`, reads and validates its header. Throws CheckpointError naming the file. */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      throw new CheckpointError(`${path}: cannot open safetensors file (${(e as Error).message})`, { cause: e });
    }
    try {
      const fileSize = (await handle.stat()).size;
      if (fileSize < 8) {
        throw new CheckpointError(`${path}: file is ${fileSize} bytes, too short for the 8-byte header length of a safetensors file`);
      }
      const lenBytes = new Uint8Array(8);
      await readFully(handle, lenBytes, 0, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new CheckpointError(`${path}: header length ${n} bytes is absurd (limit ${MAX_HEADER_BYTES}); not a safetensors file or corrupt`);
      }
      const headerLen = Number(n);
      if (8 + headerLen > fileSize) {
        throw new CheckpointError(`${path}: header length ${headerLen} bytes runs beyond the file size of ${fileSize} bytes; the file is truncated or not safetensors`);
      }
      const headerBytes = new Uint8Array(headerLen);
      await readFully(handle, headerBytes, 8, path);
      const { tensors, metadata } = parseSafetensorsHeader(headerBytes, fileSize - 8 - headerLen, 8 + headerLen, path);
      return new SafetensorsFile(path, handle, tensors, metadata, fileSize);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The tensor's entry; throws CheckpointError naming the file when absent. */
  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new CheckpointError(`${this.path}: no tensor named "${name}" (the file has ${this.tensors.size} tensors)`);
    return t;
  }

  /** Reads a whole tensor into a new buffer. For small tensors: it holds the whole tensor in memory. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.info(name);
    const out = new Uint8Array(t.byteLength);
    await readFully(this.fileHandle(name), out, t.byteOffset, `${this.path} (tensor "${name}")`);
    return out;
  }

  /**
   * Streams a tensor in chunks of `chunkBytes` (the last may be shorter), every chunk read into the
   * same buffer: `into` when given (at least chunkBytes long), otherwise one allocated here. Each
   * yielded `bytes` is overwritten by the next chunk, so consume (upload, convert, copy) it before
   * continuing the loop. Peak host memory is one chunk. chunkBytes must be a multiple of the element
   * size so that no element straddles two chunks.
   */
  async *readChunks(name: string, chunkBytes: number = DEFAULT_CHUNK_BYTES, into?: Uint8Array): AsyncGenerator<TensorChunk> {
    const t = this.info(name);
    const item = DTYPE_BYTES[t.dtype];
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0 || chunkBytes % item !== 0) {
      throw new CheckpointError(`${this.path}: readChunks("${name}"): chunkBytes ${chunkBytes} must be a positive multiple of the ${t.dtype} element size ${item}`);
    }
    if (into && into.byteLength < chunkBytes) {
      throw new CheckpointError(`${this.path}: readChunks("${name}"): the reusable buffer has ${into.byteLength} bytes, fewer than chunkBytes ${chunkBytes}`);
    }
    const buf = into ?? new Uint8Array(Math.min(chunkBytes, t.byteLength));
    for (let offset = 0; offset < t.byteLength; offset += chunkBytes) {
      const len = Math.min(chunkBytes, t.byteLength - offset);
      const bytes = buf.subarray(0, len);
      await readFully(this.fileHandle(name), bytes, t.byteOffset + offset, `${this.path} (tensor "${name}")`);
      yield { offset, bytes };
    }
  }

  /** Reads a BF16, F16 or F32 tensor as f32 (for tests and small tensors: holds it all in memory). */
  async readF32(name: string): Promise<Float32Array> {
    const t = this.info(name);
    return bytesToF32(await this.readBytes(name), t.dtype, `${this.path} (tensor "${name}")`);
  }

  /** Closes the file handle. Idempotent; reads after close throw. */
  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    if (h) await h.close();
  }

  private fileHandle(name: string): FileHandle {
    if (!this.handle) throw new CheckpointError(`${this.path}: cannot read tensor "${name}": the file was closed`);
    return this.handle;
  }
}

/**
 * Converts little-endian BF16, F16 or F32 bytes to a new Float32Array. `where` names the source in
 * the error for other dtypes.
 */
export function bytesToF32(bytes: Uint8Array, dtype: SafetensorsDtype, where: string): Float32Array {
  if (endianness() !== 'LE') throw new CheckpointError(`${where}: safetensors data is little-endian and this host is not`);
  // Copy to a fresh, aligned buffer: typed-array views need offsets aligned to the element size.
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'BF16':
      return bf16ToF32Array(new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2));
    case 'F16':
      return f16ToF32Array(new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2));
    case 'F32':
      return new Float32Array(aligned.buffer.slice(aligned.byteOffset, aligned.byteOffset + aligned.byteLength));
    default:
      throw new CheckpointError(`${where}: is ${dtype}; only ${FLOAT_DTYPES.join('/')} convert to f32 (read the raw bytes instead)`);
  }
}

/** IEEE binary16 words → f32 (subnormals, infinities and NaN included). */
export function f16ToF32Array(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/**
 * Parses and validates a header. `dataBytes` is the size of the data section, `dataStart` its
 * absolute position (8 + N). Returns tensors in data order.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  dataBytes: number,
  dataStart: number,
  path: string,
): { tensors: ReadonlyMap<string, TensorInfo>; metadata: Readonly<Record<string, string>> } {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    throw new CheckpointError(`${path}: the header is not valid UTF-8 JSON (${(e as Error).message}); the file is corrupt or not safetensors`, { cause: e });
  }
  if (!isPlainObject(header)) {
    throw new CheckpointError(`${path}: the header must be a JSON object, found ${describe(header)}`);
  }

  let metadata: Record<string, string> = {};
  const entries: { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, path);
      continue;
    }
    const where = `${path}: tensor "${name}"`;
    if (!isPlainObject(value)) throw new CheckpointError(`${where}: entry must be an object {dtype, shape, data_offsets}, found ${describe(value)}`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (!isSafetensorsDtype(dtype)) {
      throw new CheckpointError(`${where}: unknown dtype ${describe(dtype)}; supported: ${Object.keys(DTYPE_BYTES).join(', ')}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new CheckpointError(`${where}: shape must be an array of non-negative integers, found ${describe(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new CheckpointError(`${where}: data_offsets must be [begin, end] non-negative integers, found ${describe(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new CheckpointError(`${where}: data_offsets [${begin}, ${end}] are out of order (begin > end)`);
    let expected = DTYPE_BYTES[dtype];
    for (const d of shape as number[]) expected *= d;
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      throw new CheckpointError(
        `${where}: shape [${shape.join(', ')}] of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    if (end > dataBytes) {
      throw new CheckpointError(`${where}: data_offsets [${begin}, ${end}] run beyond the data section of ${dataBytes} bytes (offsets out of the file)`);
    }
    entries.push({ name, dtype, shape: shape as number[], begin, end });
  }

  // The data section must be tiled exactly: sorted by offset, each tensor starts where the previous ended.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev = '(start of the data section)';
  for (const e of entries) {
    if (e.begin < cursor) {
      throw new CheckpointError(`${path}: tensor "${e.name}" [${e.begin}, ${e.end}) overlaps tensor "${prev}" which ends at ${cursor}`);
    }
    if (e.begin > cursor) {
      throw new CheckpointError(`${path}: tensor "${e.name}" starts at ${e.begin} but the previous tensor "${prev}" ends at ${cursor}: a gap of ${e.begin - cursor} bytes`);
    }
    cursor = e.end;
    prev = e.name;
  }
  if (cursor !== dataBytes) {
    throw new CheckpointError(`${path}: tensors cover ${cursor} bytes of the ${dataBytes}-byte data section; ${dataBytes - cursor} trailing bytes belong to no tensor`);
  }

  const tensors = new Map<string, TensorInfo>();
  for (const e of entries) {
    tensors.set(
      e.name,
      Object.freeze({ name: e.name, dtype: e.dtype, shape: Object.freeze([...e.shape]), byteOffset: dataStart + e.begin, byteLength: e.end - e.begin }),
    );
  }
  return { tensors, metadata: Object.freeze(metadata) };
}

function parseMetadata(value: unknown, path: string): Record<string, string> {
  if (!isPlainObject(value)) throw new CheckpointError(`${path}: "__metadata__" must be an object of strings, found ${describe(value)}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new CheckpointError(`${path}: "__metadata__"."${k}" must be a string, found ${describe(v)}`);
    out[k] = v;
  }
  return out;
}

/** Reads exactly `into.byteLength` bytes at `position`, in pieces of at most 1 GiB. */
async function readFully(handle: FileHandle, into: Uint8Array, position: number, where: string): Promise<void> {
  let done = 0;
  while (done < into.byteLength) {
    const len = Math.min(into.byteLength - done, MAX_READ_BYTES);
    const { bytesRead } = await handle.read(into, done, len, position + done);
    if (bytesRead === 0) {
      throw new CheckpointError(`${where}: unexpected end of file at byte ${position + done}; the file shrank or is truncated`);
    }
    done += bytesRead;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
