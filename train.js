#!/usr/bin/env node
// `node train.js [--config FILE] [overrides]`: the training entry point (see README.md).
// The TypeScript sources are compiled to dist/ by `npm ci` (the "prepare" script) or `npm run build`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('./dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error('train.js: dist/ is missing; run `npm ci` (or `npm run build`) in the project folder first.');
  process.exit(1);
}
const { runCli } = await import(entry.href);
process.exitCode = await runCli(['train', ...process.argv.slice(2)]);
