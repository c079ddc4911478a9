import { describe, expect, it } from 'vitest';
import { lcsLength, lcsPattern, nearDuplicatePairs, tokenSortKey, tokenSortRatio } from '../../src/data/dedupe.js';
import { checkResponse, topOpenings, topPhrases } from '../../src/data/quality.js';
import { Rng } from '../helpers/random.js';

/** Plain dynamic-programming LCS, the reference for the bit-parallel one. */
function lcsDp(a: string, b: string): number {
  let prev = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    const cur = [0];
    for (let j = 1; j <= b.length; j++) cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    prev = cur;
  }
  return prev[b.length];
}

const good =
  'Slow dolly in on a weathered fisherman knotting a torn net at the end of a fog-bound pier, lantern light flickering across his knuckles while gulls wheel overhead; grainy 16mm texture, muted teal and rust tones, a quiet patience settling over the harbor.';

describe('token-sort ratio', () => {
  it("matches rapidfuzz's published token_sort_ratio values", () => {
    expect(tokenSortRatio('fuzzy wuzzy was a bear', 'wuzzy fuzzy was a bear')).toBe(100);
    // rapidfuzz docs: fuzz.token_sort_ratio("fuzzy was a bear", "fuzzy fuzzy was a bear") == 84.21052631578947
    expect(tokenSortRatio('fuzzy was a bear', 'fuzzy fuzzy was a bear')).toBeCloseTo(84.21052631578947, 12);
    expect(tokenSortKey('Hello, World!  hello')).toBe('hello hello world');
  });

  it('computes LCS bit-parallel exactly as the DP does, across word boundaries', () => {
    const rng = new Rng(1);
    for (let k = 0; k < 60; k++) {
      const gen = (n: number) => Array.from({ length: n }, () => 'abcd '[rng.int(0, 5)]).join('');
      const a = gen(rng.int(0, 140));
      const b = gen(rng.int(0, 140));
      expect(lcsLength(lcsPattern(a), b)).toBe(lcsDp(a, b));
    }
  });

  it('finds the same near-duplicate pairs as brute force', () => {
    const rng = new Rng(2);
    const words = ['slow', 'dolly', 'light', 'rain', 'neon', 'crane', 'dust', 'sea', 'grain', 'amber'];
    const texts = Array.from({ length: 40 }, () => Array.from({ length: rng.int(3, 9) }, () => words[rng.int(0, words.length)]).join(' '));
    const brute: [number, number][] = [];
    for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) if (tokenSortRatio(texts[i], texts[j]) >= 85) brute.push([i, j]);
    expect(nearDuplicatePairs(texts, 85).map((p) => [p.a, p.b])).toEqual(brute);
    const cross = nearDuplicatePairs(texts.slice(0, 20), 85, texts.slice(20));
    for (const p of cross) expect(tokenSortRatio(texts[p.a], texts[20 + p.b])).toBeGreaterThanOrEqual(85);
  });
});

describe("the seed's quality gate", () => {
  it('passes a clean prompt', () => {
    expect(checkResponse(good, 'an old fisherman mends a net on a foggy pier')).toEqual([]);
  });

  it('flags each problem', () => {
    expect(checkResponse('Slow pan over the sea at dusk.', 'sea')).toEqual(['word_count']);
    expect(checkResponse(`${good} --ar 16:9`, '')).toContain('sd_parameters');
    expect(checkResponse(good.replace('grainy 16mm texture', '8K HDR'), '')).toContain('sd_parameters');
    expect(checkResponse(good.replace('muted teal', 'motion blur, muted teal'), '')).toContain('sd_parameters');
    expect(checkResponse(`Camera: ${good}`, '')).toContain('screenplay_label');
    expect(checkResponse(`${good}\nScene 2: the pier`, '')).toContain('screenplay_label');
    expect(checkResponse(`Here's a prompt. ${good}`, '')).toContain('leakage');
    expect(checkResponse(`Sure, ${good}`, '')).toContain('leakage');
    expect(checkResponse(`${good}\n1. fog`, '')).toContain('leakage');
    expect(checkResponse(good, good)).toContain('echo');
    const loop = 'the waves crash on the rocks '.repeat(3);
    expect(checkResponse(`${good} ${loop}`, '')).toContain('repeated_5gram');
  });

  it('counts phrases and openings per response', () => {
    const r = ['slow dolly in on a pier', 'slow dolly in on a hill', 'crane up over a city'];
    expect(topPhrases(r, 4, 1)).toEqual([{ phrase: 'dolly in on a', rows: 2, share: 2 / 3 }]);
    expect(topOpenings(r, 2, 2)).toEqual([
      { phrase: 'slow dolly', rows: 2, share: 2 / 3 },
      { phrase: 'crane up', rows: 1, share: 1 / 3 },
    ]);
  });
});
