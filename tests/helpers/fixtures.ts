import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/model/safetensors.js';

/**
 * The reference fixtures made with transformers + PEFT (../shared/fixtures, see its README).
 * PROMPT_LORA_FIXTURES overrides the folder holding qwen3-tiny/.
 */
export const FIXTURES = process.env.PROMPT_LORA_FIXTURES ?? join(import.meta.dirname, '../../../shared/fixtures');
export const TINY = join(FIXTURES, 'qwen3-tiny');
export const TINY_MODEL = join(TINY, 'model');
export const TINY_ADAPTER = join(TINY, 'adapter');

if (!existsSync(TINY)) {
  throw new Error(`reference fixtures not found at ${TINY}; set PROMPT_LORA_FIXTURES to the folder holding qwen3-tiny/`);
}

/** All tensors of reference.safetensors as f32 (I32 tensors converted by value). */
export async function readReference(): Promise<Map<string, { shape: readonly number[]; data: Float32Array; i32?: Int32Array }>> {
  const file = await SafetensorsFile.open(join(TINY, 'reference.safetensors'));
  try {
    const out = new Map<string, { shape: readonly number[]; data: Float32Array; i32?: Int32Array }>();
    for (const [name, info] of file.tensors) {
      if (info.dtype === 'I32') {
        const b = await file.readBytes(name);
        const i32 = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        out.set(name, { shape: info.shape, data: Float32Array.from(i32), i32 });
      } else if (info.dtype === 'U8') {
        const b = await file.readBytes(name);
        out.set(name, { shape: info.shape, data: Float32Array.from(b) });
      } else {
        out.set(name, { shape: info.shape, data: await file.readF32(name) });
      }
    }
    return out;
  } finally {
    await file.close();
  }
}
