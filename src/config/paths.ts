/** Locations inside this package (its root is found from this file, in src/ or in dist/src/). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The folder holding this package's package.json. */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'prompt-lora-trainer') {
      root = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`packageRoot: no package.json of prompt-lora-trainer above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The bundled cinematic-prompt dataset (train + validation), the default `dataset_id`. */
export function bundledDatasetDir(): string {
  return join(packageRoot(), 'data', 'cinematic-prompts');
}
