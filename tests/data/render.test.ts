import { beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QwenTokenizer, bundledQwen3TokenizerDir, type ChatMessage } from '../../src/model/tokenizer.js';
import { generationPrompt, lossTokenCount, renderExample, showLossMask, tokenizeExample } from '../../src/data/render.js';
import type { Example, SourcedExample } from '../../src/data/formats.js';

const opts = { completionOnlyLoss: true, enableThinking: false, maxSeqLength: 4096 };
const sourced = (example: Example): SourcedExample => ({ example, split: 'train', file: 'x.jsonl', row: 1 });

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You write video prompts.' },
  { role: 'user', content: 'a lighthouse in a storm' },
  { role: 'assistant', content: 'Slow push in on the lighthouse.' },
  { role: 'user', content: 'now at dawn' },
  { role: 'assistant', content: 'Crane up as the sea calms at dawn.' },
];

/** A tokenizer folder with the bundled files but a ChatML template without think blocks (2507 Instruct style). */
async function instructStyleTokenizer(): Promise<QwenTokenizer> {
  const dir = mkdtempSync(join(tmpdir(), 'tok2507-'));
  const src = bundledQwen3TokenizerDir();
  copyFileSync(join(src, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const cfg = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  cfg.chat_template =
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}" +
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
  return QwenTokenizer.load(dir);
}

describe('loss masks from the rendered turns', () => {
  let tok: QwenTokenizer;
  beforeAll(async () => {
    tok = await QwenTokenizer.load();
  });

  it('marks exactly the assistant contents and their <|im_end|> in a multi-turn conversation', () => {
    const t = tokenizeExample(sourced({ kind: 'chat', messages: conversation }), tok, opts);
    // The expected token sequence and mask, written out piece by piece from the Qwen3 template:
    // earlier assistant turns have no think block, the last one (after the last user turn) has the empty one.
    const E = tok.eosTokenId; // <|im_end|>
    const pieces: [string | number, 0 | 1][] = [
      ['<|im_start|>system\nYou write video prompts.<|im_end|>\n<|im_start|>user\na lighthouse in a storm<|im_end|>\n<|im_start|>assistant\n', 0],
      ['Slow push in on the lighthouse.', 1],
      [E, 1],
      ['\n<|im_start|>user\nnow at dawn<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n', 0],
      ['Crane up as the sea calms at dawn.', 1],
      [E, 1],
      ['\n', 0],
    ];
    const ids: number[] = [];
    const mask: number[] = [];
    for (const [p, m] of pieces) {
      const part = typeof p === 'number' ? [p] : tok.encode(p);
      ids.push(...part);
      mask.push(...part.map(() => m));
    }
    expect([...t.ids]).toEqual(ids);
    expect([...t.loss]).toEqual(mask);
    expect(showLossMask(tok, t.ids, t.loss)).toBe(
      '<|im_start|>system\nYou write video prompts.<|im_end|>\n<|im_start|>user\na lighthouse in a storm<|im_end|>\n<|im_start|>assistant\n' +
        '⟦Slow push in on the lighthouse.<|im_end|>⟧\n<|im_start|>user\nnow at dawn<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' +
        '⟦Crane up as the sea calms at dawn.<|im_end|>⟧\n',
    );
    expect(t.truncated).toBe(false);
    expect(t.fullLength).toBe(ids.length);
  });

  it('finds the content even when it repeats template text (no marker search)', () => {
    const tricky: ChatMessage[] = [
      { role: 'user', content: 'say <|im_start|>assistant' },
      { role: 'assistant', content: '<|im_start|>assistant\nassistant' },
    ];
    const t = tokenizeExample(sourced({ kind: 'chat', messages: tricky }), tok, opts);
    expect(showLossMask(tok, t.ids, t.loss)).toBe(
      '<|im_start|>user\nsay <|im_start|>assistant<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n⟦<|im_start|>assistant\nassistant<|im_end|>⟧\n',
    );
  });

  it('trains every token with completion_only_loss=false (the seed behaviour)', () => {
    const t = tokenizeExample(sourced({ kind: 'chat', messages: conversation }), tok, { ...opts, completionOnlyLoss: false });
    expect([...t.loss].every((x) => x === 1)).toBe(true);
  });

  it('masks plain prompt/completion text at the completion and appends <|im_end|>', () => {
    const ex: Example = { kind: 'completion', prompt: '### Instruction:\na fox\n\n### Response:\n', completion: 'Low tracking shot of a fox.' };
    const t = tokenizeExample(sourced(ex), tok, opts);
    expect(showLossMask(tok, t.ids, t.loss)).toBe('### Instruction:\na fox\n\n### Response:\n⟦Low tracking shot of a fox.<|im_end|>⟧');
    const text = tokenizeExample(sourced({ kind: 'text', text: 'verbatim text' }), tok, opts);
    expect(showLossMask(tok, text.ids, text.loss)).toBe('⟦verbatim text<|im_end|>⟧');
  });

  it('truncates at max_seq_length and counts what is left', () => {
    const t = tokenizeExample(sourced({ kind: 'chat', messages: conversation }), tok, { ...opts, maxSeqLength: 30 });
    expect(t.ids.length).toBe(30);
    expect(t.truncated).toBe(true);
    expect(t.fullLength).toBeGreaterThan(30);
    expect(lossTokenCount(t)).toBe([...t.loss].slice(1).reduce((a, b) => a + b, 0));
  });

  it('puts the same empty think block before the answer in training as in the generation prompt (hybrid template)', () => {
    const prompt = generationPrompt(tok, conversation.slice(0, 4), false);
    expect(prompt.endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\n')).toBe(true);
    const { text, spans } = renderExample({ kind: 'chat', messages: conversation }, tok, opts);
    expect(text.startsWith(prompt)).toBe(true);
    expect(spans[spans.length - 1][0]).toBe(prompt.length);
  });

  it('uses no think block with a template that has no thinking switch (2507 Instruct style)', async () => {
    const t2 = await instructStyleTokenizer();
    const prompt = generationPrompt(t2, conversation.slice(0, 4), false);
    expect(prompt.endsWith('<|im_start|>assistant\n')).toBe(true);
    const { text, spans } = renderExample({ kind: 'chat', messages: conversation }, t2, opts);
    expect(text.startsWith(prompt)).toBe(true);
    expect(spans[spans.length - 1][0]).toBe(prompt.length);
    expect(text).not.toContain('<think>');
  });
});
