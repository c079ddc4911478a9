import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ShaderError } from '../errors.js';
import { composeShader } from './shader-source.js';

/**
 * WGSL sources live in <package root>/shaders/*.wgsl. This module is at src/kernels/ when run from
 * TypeScript (vitest) and at dist/src/kernels/ when compiled; both resolve to the same folder.
 */
function findShaderDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const dir = join(here, up, 'shaders');
    if (existsSync(join(dir, 'README.md'))) return dir;
  }
  throw new ShaderError(`shaders/ folder not found above ${here}; the package is incomplete (reinstall it)`);
}

let shaderDir: string | undefined;

/** Full path of a shader file, e.g. shaderPath('rmsnorm_forward.wgsl'). */
export function shaderPath(file: string): string {
  shaderDir ??= findShaderDir();
  return join(shaderDir, file);
}

/** The text of shaders/<file> with its `// #include` lines resolved (shader-source.ts); a missing file is a ShaderError naming it. */
export function readShader(file: string): string {
  return composeShader(file, readShaderFile);
}

/** The text of shaders/<file> as stored. */
export function readShaderFile(file: string): string {
  const path = shaderPath(file);
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ShaderError(`cannot read shader ${path}: ${(e as Error).message}`, { cause: e });
  }
}
