import type { Qwen3Config } from './config.js';
import type { SafetensorsDtype, TensorChunk } from './safetensors.js';

/**
 * Where model weights stream from: a checkpoint folder on disk (Checkpoint) or weights made up
 * on the fly (RandomQwen3Source). The loader only needs names, shapes/dtypes and chunked bytes.
 */
export interface TensorSource {
  /** Describes the source in messages (a folder path, or "random weights (seed 1)"). */
  readonly dir: string;
  readonly config: Qwen3Config;
  names(): string[];
  info(name: string): { readonly dtype: SafetensorsDtype; readonly shape: readonly number[] };
  readChunks(name: string, chunkBytes?: number, into?: Uint8Array): AsyncGenerator<TensorChunk>;
  close(): Promise<void>;
}
