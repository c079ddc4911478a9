import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * llama.cpp's own quantiser, for bit-exactness tests: tests/export/ggml-quantize-harness.c compiled
 * with the machine's C compiler against the libggml-base.so of node-llama-cpp's prebuilt CPU build
 * (the same llama.cpp that loads our GGUFs in the llama.cpp tests). `available` says why not when
 * the compiler or the library is missing.
 */
const LIB_DIR = join(import.meta.dirname, '../../node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
const HARNESS = join(import.meta.dirname, 'ggml-quantize-harness.c');

export interface GgmlReference {
  quantize(typeId: number, x: Float32Array, nPerRow: number): Uint8Array;
  close(): void;
}

export function ggmlReference(): GgmlReference | string {
  if (process.platform !== 'linux' || process.arch !== 'x64') return `llama.cpp reference needs linux-x64 (this is ${process.platform}-${process.arch})`;
  if (!existsSync(join(LIB_DIR, 'libggml-base.so'))) return `no ${join(LIB_DIR, 'libggml-base.so')} (npm ci installs node-llama-cpp's prebuilt binaries)`;
  const dir = mkdtempSync(join(tmpdir(), 'ggml-ref-'));
  const exe = join(dir, 'harness');
  try {
    execFileSync('cc', ['-O1', '-o', exe, HARNESS, `-L${LIB_DIR}`, '-lggml-base', `-Wl,-rpath,${LIB_DIR}`], { stdio: 'pipe' });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return `cannot compile ${HARNESS} with cc: ${(e as Error).message.split('\n')[0]}`;
  }
  let n = 0;
  return {
    quantize(typeId, x, nPerRow) {
      const input = join(dir, `in-${n}.f32`);
      const output = join(dir, `out-${n++}.bin`);
      writeFileSync(input, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
      execFileSync(exe, [String(typeId), String(nPerRow), String(x.length / nPerRow), input, output], { stdio: 'pipe' });
      return new Uint8Array(readFileSync(output));
    },
    close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
