/**
 * Examples → token ids + loss mask.
 *
 * Chat examples are rendered with the model's own template. The trained spans are found from
 * the rendering itself, not by searching for marker strings: for each assistant message the
 * conversation is rendered a second time with that message's content replaced by a one-character
 * probe; the text before the first difference and after the last difference is template text, so
 * the difference is exactly where (and as what) the content landed. The span then extends over
 * the tokens the template writes to close the turn, through the end-of-sequence token
 * (`<|im_end|>` for Qwen), so the model learns to stop. Token boundaries come from byte offsets
 * of the full text's tokens (`encodeWithOffsets`); a token is trained when it starts inside a
 * span (a token merged across the start of a span belongs to the prompt).
 *
 * Completion examples (plain prompt + completion) train the completion and the appended
 * end-of-sequence token; text examples and `completionOnlyLoss=false` train every token.
 * Labels are not shifted here: the model's loss compares logits[t] with ids[t+1].
 */
import type { ChatMessage, QwenTokenizer } from '../model/tokenizer.js';
import type { Example, SourcedExample } from './formats.js';

export interface RenderOptions {
  /** Loss on assistant/completion tokens only (true) or on every token (false). */
  completionOnlyLoss: boolean;
  /** Passed to the chat template as enable_thinking. */
  enableThinking: boolean;
}

/** Rendered text and the character spans [start, end) whose tokens are trained. */
export interface RenderedExample {
  text: string;
  spans: [number, number][];
}

export interface TokenizedExample {
  /** (n) i32 token ids, n ≤ max_seq_length. */
  ids: Int32Array;
  /** (n) u8: 1 where the token is a target (labels[t] = ids[t]), 0 where labels[t] = −100. */
  loss: Uint8Array;
  /** Tokens before truncation. */
  fullLength: number;
  truncated: boolean;
  split: SourcedExample['split'];
  file: string;
  row: number;
}

/** Characters the probe may use; one that does not occur in the rendered text is chosen. */
const PROBES = ['\u0001', '\u0002', '\u0003', '\u0004', '\u0005', '\u0006', '\u000e', '\u000f'];

/** Renders `e`; for chat the spans are the assistant contents (the end-of-turn tokens are added in tokenizeExample). */
export function renderExample(e: Example, tok: QwenTokenizer, opts: RenderOptions): RenderedExample {
  const eos = tok.decode([tok.eosTokenId]);
  if (e.kind === 'text') {
    const text = e.text.trimEnd().endsWith(eos) ? e.text : e.text + eos;
    return { text, spans: [[0, text.length]] };
  }
  if (e.kind === 'completion') {
    const text = e.prompt + e.completion + (e.completion.trimEnd().endsWith(eos) ? '' : eos);
    return { text, spans: [[opts.completionOnlyLoss ? e.prompt.length : 0, text.length]] };
  }
  const text = tok.renderChat(e.messages, { enableThinking: opts.enableThinking });
  if (!opts.completionOnlyLoss) return { text, spans: [[0, text.length]] };
  const probe = PROBES.find((p) => !text.includes(p));
  if (probe === undefined) throw new RangeError('renderExample: every probe character occurs in the conversation');
  const spans: [number, number][] = [];
  e.messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const probed: ChatMessage[] = e.messages.map((x, j) => (j === i ? { role: x.role, content: probe } : x));
    const other = tok.renderChat(probed, { enableThinking: opts.enableThinking });
    let start = 0;
    while (start < text.length && start < other.length && text[start] === other[start]) start++;
    let tail = 0;
    while (tail < text.length - start && tail < other.length - start && text[text.length - 1 - tail] === other[other.length - 1 - tail]) tail++;
    spans.push([start, text.length - tail]);
  });
  return { text, spans };
}

/** Tokenizes, marks the trained tokens and truncates to `maxSeqLength`. */
export function tokenizeExample(se: SourcedExample, tok: QwenTokenizer, opts: RenderOptions & { maxSeqLength: number }): TokenizedExample {
  const { text, spans } = renderExample(se.example, tok, opts);
  const { ids, starts } = tok.encodeWithOffsets(text);
  const loss = new Uint8Array(ids.length);
  const extendToEos = se.example.kind === 'chat' && opts.completionOnlyLoss;
  for (const [s, e] of spans) {
    let t = 0;
    while (t < ids.length && starts[t] < s) t++;
    for (; t < ids.length && starts[t] < e; t++) loss[t] = 1;
    if (!extendToEos) continue;
    // The template's end of turn: whitespace-only tokens, then the end-of-sequence token.
    for (let u = t; u < ids.length; u++) {
      if (ids[u] === tok.eosTokenId) {
        loss.fill(1, t, u + 1);
        break;
      }
      if (tok.decode([ids[u]]).trim() !== '') break;
    }
  }
  const n = Math.min(ids.length, opts.maxSeqLength);
  return {
    ids: Int32Array.from(ids.slice(0, n)),
    loss: loss.slice(0, n),
    fullLength: ids.length,
    truncated: ids.length > n,
    split: se.split,
    file: se.file,
    row: se.row,
  };
}

/** Number of target tokens that count in the loss (a target at position 0 has no logit before it). */
export function lossTokenCount(ex: Pick<TokenizedExample, 'loss'>): number {
  let n = 0;
  for (let t = 1; t < ex.loss.length; t++) n += ex.loss[t];
  return n;
}

/** The text the model is asked to continue at generation: the conversation plus the template's generation prompt. */
export function generationPrompt(tok: QwenTokenizer, messages: readonly ChatMessage[], enableThinking: boolean): string {
  return tok.renderChat(messages, { addGenerationPrompt: true, enableThinking });
}

/**
 * Shows the loss mask: trained runs of tokens inside ⟦ ⟧, everything else as is. Used by
 * `--dry-run` and in tests.
 */
export function showLossMask(tok: QwenTokenizer, ids: ArrayLike<number>, loss: ArrayLike<number>): string {
  let out = '';
  let t = 0;
  while (t < ids.length) {
    const on = loss[t] === 1;
    let u = t;
    const run: number[] = [];
    while (u < ids.length && (loss[u] === 1) === on) run.push(ids[u++]);
    const s = tok.decode(run);
    out += on ? `⟦${s}⟧` : s;
    t = u;
  }
  return out;
}
