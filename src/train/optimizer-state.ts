import { CheckpointError } from '../errors.js';
import type { Gpu } from '../kernels/gpu.js';
import { numel, type Tensor } from '../kernels/tensor.js';

/**
 * The optimiser's GPU state as host tensors, for checkpoints: each optimiser lists its buffers by
 * name (`exportState`), and `importState` writes tensors of the same names, dtypes and shapes back.
 * The bytes are the GPU buffers' own (little-endian f32, or one byte per 8-bit code), so a saved
 * and restored state continues bit for bit.
 */
export interface StateTensor {
  readonly name: string;
  /** safetensors dtype of the bytes: F32 (moments, absmax) or U8 (8-bit codes). */
  readonly dtype: 'F32' | 'U8';
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** One GPU buffer of an optimiser's state and the name it is saved under. */
export interface NamedStateBuffer {
  readonly name: string;
  readonly tensor: Tensor;
}

function dtypeOf(t: Tensor): 'F32' | 'U8' {
  if (t.dtype === 'f32') return 'F32';
  if (t.dtype === 'u8x4') return 'U8';
  throw new CheckpointError(`optimiser state ${t.label}: dtype ${t.dtype} cannot be saved (f32 and u8x4 only)`);
}

/** Bytes of the state tensor: 4 per f32 element, 1 per 8-bit code. */
function bytesOf(t: Tensor): number {
  return numel(t.shape) * (t.dtype === 'u8x4' ? 1 : 4);
}

/** Reads every buffer back (waits for the GPU). */
export async function readStateTensors(gpu: Gpu, buffers: readonly NamedStateBuffer[]): Promise<StateTensor[]> {
  const out: StateTensor[] = [];
  for (const { name, tensor } of buffers) {
    const bytes = new Uint8Array(await gpu.read(tensor)).slice(0, bytesOf(tensor));
    out.push({ name, dtype: dtypeOf(tensor), shape: [...tensor.shape], data: bytes });
  }
  return out;
}

/**
 * Writes `given` into `buffers`: the same names, dtypes and shapes, nothing missing and nothing
 * extra, else a CheckpointError naming the tensor (`where` names the checkpoint file); nothing is
 * written unless every tensor matches.
 */
export function writeStateTensors(gpu: Gpu, where: string, buffers: readonly NamedStateBuffer[], given: readonly StateTensor[]): void {
  const byName = new Map(given.map((t) => [t.name, t]));
  const expected = buffers.map((b) => b.name);
  for (const { name, tensor } of buffers) {
    const t = byName.get(name);
    if (!t) throw new CheckpointError(`${where}: optimiser state "${name}" is missing (expected ${expected.join(', ')}); the checkpoint was written with another optimiser`);
    const shape = [...tensor.shape];
    if (t.dtype !== dtypeOf(tensor) || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.byteLength !== bytesOf(tensor)) {
      throw new CheckpointError(
        `${where}: optimiser state "${name}" is ${t.dtype} [${t.shape.join(', ')}], expected ${dtypeOf(tensor)} [${shape.join(', ')}]; ` +
          'the checkpoint belongs to an adapter of another size (lora_r, lora_target_modules) or another optimiser',
      );
    }
  }
  const extra = given.filter((t) => !expected.includes(t.name));
  if (extra.length > 0) {
    throw new CheckpointError(`${where}: unexpected optimiser state "${extra[0].name}" (expected ${expected.join(', ')}); the checkpoint was written with another optimiser`);
  }
  // Only once everything matched: a refused checkpoint leaves the state untouched.
  for (const { name, tensor } of buffers) gpu.write(tensor, byName.get(name)!.data);
}
