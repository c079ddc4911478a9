import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointError } from '../errors.js';
import type { Qwen3Config } from '../model/config.js';
import { gguf, type GgufValue } from './gguf-writer.js';

/**
 * The tokenizer as GGUF metadata, the way llama.cpp's convert_hf_to_gguf.py writes it for Qwen
 * (byte-level BPE, `tokenizer.ggml.model` "gpt2", pre-tokenizer "qwen2"):
 *   tokens      every id below vocab_size: the vocabulary string (byte-level, e.g. "Ġthe"), the
 *               added token's text, or "[PAD<id>]" where the tokenizer has no token (the embedding
 *               of Qwen3 has 151936 rows, the tokenizer 151669 tokens)
 *   token_type  1 normal, 3 control (an added token marked special, or one that looks special:
 *               `<|…|>`, as convert_hf_to_gguf's does_token_look_special), 4 user-defined (other
 *               added tokens such as `<think>`), 5 unused (padding)
 *   merges      "left right" strings in rank order
 *   bos / eos / padding ids, add_bos_token, chat_template
 */

export interface GgufTokenizer {
  readonly tokens: readonly string[];
  readonly tokenTypes: readonly number[];
  readonly merges: readonly string[];
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly addBos: boolean;
  readonly chatTemplate: string;
}

export const TOKEN_TYPE = { NORMAL: 1, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5 } as const;

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read (${(e as Error).message})`, { cause: e });
  }
}

function specialText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** convert_hf_to_gguf's does_token_look_special. */
function looksSpecial(t: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) ||
    (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'))
  );
}

/**
 * Reads tokenizer.json + tokenizer_config.json of `dir` (a folder with both: tokenizerSourceDir)
 * for a model of `config.vocabSize` embedding rows. `chatTemplate` is the template the model uses.
 */
export async function readGgufTokenizer(dir: string, config: Qwen3Config, chatTemplate: string): Promise<GgufTokenizer> {
  const tokPath = join(dir, 'tokenizer.json');
  const tok = await readJson(tokPath);
  const cfg = await readJson(join(dir, 'tokenizer_config.json'));
  const model = tok.model as { type?: string; vocab?: Record<string, number>; merges?: unknown[] } | undefined;
  if (!model || model.type !== 'BPE' || typeof model.vocab !== 'object' || !Array.isArray(model.merges)) {
    throw new CheckpointError(`${tokPath}: expected a BPE model with vocab and merges (Qwen's byte-level BPE), found ${model?.type ?? 'none'}`);
  }
  const V = config.vocabSize;
  const tokens: (string | undefined)[] = new Array(V).fill(undefined);
  const types = new Array<number>(V).fill(TOKEN_TYPE.UNUSED);
  const place = (id: number, text: string, type: number): void => {
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new CheckpointError(`${tokPath}: token ${JSON.stringify(text)} has id ${id}, outside the model's vocab_size ${V}; the tokenizer belongs to another model`);
    }
    tokens[id] = text;
    types[id] = type;
  };
  for (const [text, id] of Object.entries(model.vocab!)) place(id, text, TOKEN_TYPE.NORMAL);
  const added = (tok.added_tokens ?? []) as AddedToken[];
  for (const a of added) place(a.id, a.content, a.special || looksSpecial(a.content) ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED);
  const all = tokens.map((t, i) => t ?? `[PAD${i}]`);

  const merges = model.merges!.map((m, i) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return `${m[0]} ${m[1]}`;
    throw new CheckpointError(`${tokPath}: merges[${i}] is ${JSON.stringify(m)}; expected "a b" or ["a", "b"]`);
  });

  const ids = new Map<string, number>();
  all.forEach((t, i) => ids.has(t) || ids.set(t, i));
  const idOf = (text: string | undefined): number | undefined => (text === undefined ? undefined : ids.get(text));
  const eosText = specialText(cfg.eos_token);
  const eosId = idOf(eosText);
  if (eosId === undefined) throw new CheckpointError(`${join(dir, 'tokenizer_config.json')}: eos_token ${JSON.stringify(eosText)} is not a token of ${tokPath}`);
  const bosId = idOf(specialText(cfg.bos_token)) ?? config.bosTokenId ?? idOf('<|endoftext|>') ?? eosId;
  const padId = idOf(specialText(cfg.pad_token)) ?? bosId;
  return Object.freeze({
    tokens: all,
    tokenTypes: types,
    merges,
    bosId,
    eosId,
    padId,
    addBos: cfg.add_bos_token === true,
    chatTemplate,
  });
}

/** The tokenizer.* key/value pairs. */
export function tokenizerMetadata(t: GgufTokenizer): [string, GgufValue][] {
  return [
    ['tokenizer.ggml.model', gguf.str('gpt2')],
    ['tokenizer.ggml.pre', gguf.str('qwen2')],
    ['tokenizer.ggml.tokens', gguf.strs(t.tokens)],
    ['tokenizer.ggml.token_type', gguf.i32s(t.tokenTypes)],
    ['tokenizer.ggml.merges', gguf.strs(t.merges)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(t.eosId)],
    ['tokenizer.ggml.padding_token_id', gguf.u32(t.padId)],
    ['tokenizer.ggml.bos_token_id', gguf.u32(t.bosId)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(t.addBos)],
    ['tokenizer.chat_template', gguf.str(t.chatTemplate)],
  ];
}
