import { describe, expect, it } from 'vitest';
import { TextStream } from '../../src/generate/text-stream.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';

/** A toy vocabulary: token i is PIECES[i]; decoding is concatenation. */
const PIECES = ['Hel', 'lo ', 'wor', 'ld', '!', ' E', 'N', 'D', 'x', 'END', 'o w'];
const decode = (ids: readonly number[]) => ids.map((i) => PIECES[i]).join('');
const ids = (...pieces: string[]) => pieces.map((p) => PIECES.indexOf(p));

/** Pushes the tokens until a stop; returns the streamed pieces, the final text and whether it stopped. */
function run(tokens: number[], stops: string[]): { pieces: string[]; text: string; stopped: boolean } {
  const s = new TextStream(decode, stops);
  const pieces: string[] = [];
  for (const t of tokens) {
    pieces.push(s.push(t));
    if (s.stopped) break;
  }
  pieces.push(s.flush());
  return { pieces, text: s.text, stopped: s.stopped };
}

describe('text stream with stop strings', () => {
  it('streams everything when there is no stop string', () => {
    const r = run(ids('Hel', 'lo ', 'wor', 'ld', '!'), []);
    expect(r.pieces.slice(0, 5)).toEqual(['Hel', 'lo ', 'wor', 'ld', '!']);
    expect(r.text).toBe('Hello world!');
    expect(r.stopped).toBe(false);
  });

  it('ends before a stop string that spans tokens; the streamed text is exactly the result', () => {
    const r = run(ids('Hel', 'lo ', 'wor', 'ld', '!'), ['o w']);
    expect(r.text).toBe('Hell');
    expect(r.stopped).toBe(true);
    expect(r.pieces.join('')).toBe('Hell');
  });

  it('holds back a tail that may begin a stop string, and releases it when it does not', () => {
    const s = new TextStream(decode, ['END']);
    expect(s.push(ids('Hel')[0])).toBe('Hel');
    expect(s.push(ids(' E')[0])).toBe(' '); // "E" could start "END"
    expect(s.push(ids('N')[0])).toBe(''); // "EN" too
    expect(s.push(ids('x')[0])).toBe('ENx'); // "ENx" cannot
    expect(s.push(ids(' E')[0])).toBe(' ');
    expect(s.flush()).toBe('E');
    expect(s.text).toBe('Hel ENx E');
  });

  it('stops at the earliest of several stop strings, also when one is a whole token', () => {
    expect(run(ids('Hel', 'lo ', 'END', 'wor'), ['wor', 'END']).text).toBe('Hello ');
    expect(run(ids('Hel', ' E', 'N', 'D', 'wor'), ['ld', 'END']).text).toBe('Hel ');
    expect(run(ids('END'), ['END']).text).toBe('');
  });

  it('never shows half a character: multi-byte characters split over byte tokens', async () => {
    const tok = await QwenTokenizer.load();
    const text = 'fox 🦊 in 日本語 snow 🎬!';
    const tokens = tok.encode(text);
    // the emoji are split over byte-level tokens, so some prefixes decode to U+FFFD
    expect(tokens.some((_, i) => tok.decode(tokens.slice(0, i + 1)).endsWith('\ufffd'))).toBe(true);
    const s = new TextStream((x) => tok.decode(x), ['snow 🎬?']);
    const pieces = tokens.map((t) => s.push(t));
    pieces.push(s.flush());
    for (const p of pieces) expect(p).not.toContain('\ufffd');
    expect(pieces.join('')).toBe(text);
    expect(s.text).toBe(text);
  });

  it('refuses an empty stop string', () => {
    expect(() => new TextStream(decode, [''])).toThrow(/empty stop string/);
  });
});
