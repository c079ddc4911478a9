import { ShapeError } from '../errors.js';

/**
 * Element formats of GPU buffers.
 *  f32    one float per element
 *  i32    one signed int per element (token ids, labels, position and segment ids)
 *  u32    one unsigned int per element
 *  f16    one IEEE half per element (array<f16> in WGSL; needs shader-f16), two to a u32 word
 *  bf16x2 two bfloat16 values per u32 word, element 2i in the low half, 2i+1 in the high half
 *         (the little-endian byte order of the safetensors file, so bytes upload unchanged)
 *  nf4x8  eight 4-bit NF4 codes per u32 word: byte j of the word holds elements 2j (high nibble)
 *         and 2j+1 (low nibble), the byte order of bitsandbytes' packed uint8 tensor
 *  u8x4   four bytes per u32 word (little-endian), e.g. double-quantised absmax codes
 */
export type DType = 'f32' | 'i32' | 'u32' | 'f16' | 'bf16x2' | 'nf4x8' | 'u8x4';

/** Bytes needed for `count` logical elements of `dtype`, rounded up to whole u32 words. */
export function byteLength(dtype: DType, count: number): number {
  switch (dtype) {
    case 'f32':
    case 'i32':
    case 'u32':
      return count * 4;
    case 'f16':
    case 'bf16x2':
      return Math.ceil(count / 2) * 4;
    case 'nf4x8':
      return Math.ceil(count / 8) * 4;
    case 'u8x4':
      return Math.ceil(count / 4) * 4;
  }
}

/**
 * A view of (part of) a GPU buffer with a logical shape. `offset` is in bytes and must be a
 * multiple of the device's minStorageBufferOffsetAlignment (256) when bound.
 */
export interface Tensor {
  readonly label: string;
  readonly buffer: GPUBuffer;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly offset: number;
  /** Bytes of this view (byteLength(dtype, numel(shape))). */
  readonly byteSize: number;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensorView(buffer: GPUBuffer, label: string, shape: readonly number[], dtype: DType, offset = 0): Tensor {
  const byteSize = byteLength(dtype, numel(shape));
  if (offset + byteSize > buffer.size) {
    throw new ShapeError(`${label}: view of ${byteSize} bytes at offset ${offset} exceeds its buffer of ${buffer.size} bytes`);
  }
  return Object.freeze({ label, buffer, shape: Object.freeze([...shape]), dtype, offset, byteSize });
}

/** Throws a ShapeError naming the kernel and the size when one of `sizes` (name → value) is not a positive integer. */
export function expectPositiveIntegers(where: string, sizes: Readonly<Record<string, number>>): void {
  for (const [name, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v < 1) throw new ShapeError(`${where}: ${name} must be a positive integer, got ${v}`);
  }
}

/**
 * WebGPU forbids a dispatch to write a buffer it also reads: a ShapeError when an output of
 * `written` shares a buffer with one of `read`, ending with `hint` (what to do instead).
 */
export function expectNoReadWriteAlias(where: string, written: readonly Tensor[], read: readonly Tensor[], hint = 'give it its own buffer'): void {
  for (const out of written) {
    for (const input of read) {
      if (out.buffer === input.buffer) {
        throw new ShapeError(
          `${where}: output ${out.label} shares a GPU buffer with input ${input.label}; WebGPU forbids writing a buffer that the same ` +
            `dispatch reads: ${hint}`,
        );
      }
    }
  }
}

/** Two writable bindings may share a buffer only over disjoint byte ranges (WebGPU's aliasing rule). */
export function expectDisjoint(where: string, a: Tensor, b: Tensor): void {
  if (a.buffer === b.buffer && a.offset < b.offset + b.byteSize && b.offset < a.offset + a.byteSize) {
    throw new ShapeError(`${where}: ${a.label} and ${b.label} overlap in one GPU buffer; both are written, give them separate memory`);
  }
}

/** Throws a ShapeError naming the kernel and tensor when `t` does not have `shape` and `dtype`. */
export function expectTensor(where: string, t: Tensor, shape: readonly number[], dtype: DType): void {
  if (t.dtype !== dtype) {
    throw new ShapeError(`${where}: ${t.label} has dtype ${t.dtype}, expected ${dtype}`);
  }
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError(`${where}: ${t.label} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
}
