import { describe, expect, it, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QwenTokenizer, bundledQwen3TokenizerDir } from '../../src/model/tokenizer.js';
import { CheckpointError } from '../../src/errors.js';

const FIXTURE_MODEL = new URL('../../../shared/fixtures/qwen3-tiny/model', import.meta.url).pathname;

/** Independent source for special-token ids: tokenizer_config.json's added_tokens_decoder. */
function addedTokenIds(dir: string): Map<string, number> {
  const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as {
    added_tokens_decoder: Record<string, { content: string }>;
  };
  return new Map(Object.entries(cfg.added_tokens_decoder).map(([id, t]) => [t.content, Number(id)]));
}

describe('QwenTokenizer', () => {
  let tok: QwenTokenizer;
  beforeAll(async () => {
    tok = await QwenTokenizer.load(FIXTURE_MODEL);
  });

  it('falls back to the bundled Qwen3 tokenizer for a folder without tokenizer files', () => {
    expect(tok.source).toBe(join(bundledQwen3TokenizerDir(), 'tokenizer.json'));
    // 151643 BPE tokens + 26 added tokens (<|endoftext|> … </think>).
    expect(tok.vocabSize).toBe(151669);
  });

  it('gives the published Qwen2/3 ids and the special-token ids of added_tokens_decoder', () => {
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    const ids = addedTokenIds(bundledQwen3TokenizerDir());
    for (const t of ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<think>', '</think>']) {
      expect(tok.tokenToId(t)).toBe(ids.get(t));
    }
    expect(ids.get('<|im_start|>')).toBe(151644);
    expect(ids.get('<|im_end|>')).toBe(151645);
    expect(ids.get('<|endoftext|>')).toBe(151643);
    expect(tok.eosTokenId).toBe(151645);
    expect(tok.padTokenId).toBe(151643);
    // Special-token strings in the text are parsed as single tokens, none are added.
    expect(tok.encode('<|im_start|>user\nHello world<|im_end|>')).toEqual([151644, 872, 198, 9707, 1879, 151645]);
  });

  it('round-trips unicode text and can skip special tokens', () => {
    const texts = [
      'Slow dolly in on the studio at night — hard side light; 35 mm grain.',
      'Héllo wörld, ça va? Ελληνικά, русский, 日本語のテキスト, 한국어, العربية 🎬🌊',
      '  leading spaces\n\nand\ttabs  \r\n trailing ',
    ];
    for (const s of texts) expect(tok.decode(tok.encode(s))).toBe(s);
    const ids = tok.encode('<|im_start|>assistant\nHi<|im_end|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('assistant\nHi');
  });

  it('renders a system+user+assistant conversation exactly as the Qwen3 template writes it', () => {
    const text = tok.renderChat([
      { role: 'system', content: 'You are a cinematic video prompt generator.' },
      { role: 'user', content: 'A lighthouse in a storm' },
      { role: 'assistant', content: 'Slow push in on the lighthouse.' },
    ]);
    // The hybrid Qwen3 template puts an empty think block before the final assistant turn
    // (it follows the last user message and has no reasoning_content).
    expect(text).toBe(
      '<|im_start|>system\nYou are a cinematic video prompt generator.<|im_end|>\n' +
        '<|im_start|>user\nA lighthouse in a storm<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\n\n</think>\n\nSlow push in on the lighthouse.<|im_end|>\n',
    );
  });

  it('writes the empty think block for enableThinking=false with the generation prompt', () => {
    expect(tok.hasThinkingSwitch).toBe(true);
    // The template's text: `{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}`.
    expect(tok.chatTemplate).toContain("'<think>\\n\\n</think>\\n\\n'");
    const msgs = [{ role: 'user' as const, content: 'A fox at dawn' }];
    expect(tok.renderChat(msgs, { addGenerationPrompt: true, enableThinking: false })).toBe(
      '<|im_start|>user\nA fox at dawn<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
    expect(tok.renderChat(msgs, { addGenerationPrompt: true })).toBe('<|im_start|>user\nA fox at dawn<|im_end|>\n<|im_start|>assistant\n');
    expect(tok.renderChat(msgs, { addGenerationPrompt: true, enableThinking: true })).toBe(
      '<|im_start|>user\nA fox at dawn<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('uses a folder’s own files and a template without the thinking switch (2507 Instruct style)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'));
    const src = bundledQwen3TokenizerDir();
    copyFileSync(join(src, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    cfg.chat_template =
      "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t = await QwenTokenizer.load(dir);
    expect(t.source).toBe(join(dir, 'tokenizer.json'));
    expect(t.hasThinkingSwitch).toBe(false);
    expect(t.renderChat([{ role: 'user', content: 'x' }], { addGenerationPrompt: true, enableThinking: false })).toBe(
      '<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  it('reads chat_template.jinja (transformers ≥ 4.43) and tolerates extra_special_tokens written as a list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'));
    const src = bundledQwen3TokenizerDir();
    copyFileSync(join(src, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'chat_template.jinja'), cfg.chat_template as string);
    delete cfg.chat_template;
    cfg.extra_special_tokens = ['<|im_start|>', '<|im_end|>'];
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t = await QwenTokenizer.load(dir);
    expect(t.encode('Hello world')).toEqual([9707, 1879]);
    expect(t.renderChat([{ role: 'user', content: 'x' }], { addGenerationPrompt: true, enableThinking: false })).toBe(
      '<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
  });

  it('names the missing or corrupt file in a CheckpointError', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'));
    writeFileSync(join(dir, 'tokenizer.json'), '{"model": ');
    await expect(QwenTokenizer.load(dir)).rejects.toThrow(CheckpointError);
    await expect(QwenTokenizer.load(dir)).rejects.toThrow(/tokenizer_config\.json: missing/);
    copyFileSync(join(bundledQwen3TokenizerDir(), 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
    await expect(QwenTokenizer.load(dir)).rejects.toThrow(/tokenizer\.json: not valid JSON/);
  });
});
