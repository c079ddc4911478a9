/**
 * Exact and near duplicates by token-sort ratio, the measure of the seed's dataset builder
 * (thefuzz / rapidfuzz `token_sort_ratio` with default processing): lowercase, everything but
 * letters and digits → space, words sorted and joined by one space; then
 *   ratio = 100 · 2·LCS(a, b) / (|a| + |b|)            (Indel similarity)
 * LCS is computed bit-parallel (Hyyrö 2004): one pass over b with |a|/30 words per character
 * (30-bit words keep every sum a small integer, which V8 computes fastest). Two strict upper bounds skip most pairs first: 2·min(|a|,|b|)/(|a|+|b|) and the
 * shared character counts Σ_c min(count_a(c), count_b(c)).
 */

/** thefuzz's default processing followed by the token sort. */
export function tokenSortKey(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim()
    .split(' ')
    .filter((w) => w !== '')
    .sort()
    .join(' ');
}

/**
 * A string prepared for repeated LCS queries: its characters as small alphabet indices, one bit
 * mask (words × u32) per alphabet letter of the positions holding it, and letter counts.
 */
export interface LcsPattern {
  text: string;
  words: number;
  /** Alphabet index of each character. */
  codes: Int32Array;
  /** masks[letter·words + w]: bit i of word w set where text[30w + i] is that letter. */
  masks: Int32Array;
  counts: Int32Array;
}

/** Character → small index, shared by the patterns compared with each other. */
export class Alphabet {
  private readonly index = new Map<number, number>();
  get size(): number {
    return this.index.size;
  }
  codesOf(text: string): Int32Array {
    const out = new Int32Array(text.length);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      let k = this.index.get(c);
      if (k === undefined) this.index.set(c, (k = this.index.size));
      out[i] = k;
    }
    return out;
  }
}

/** Prepares `text`; every pattern later compared must come from the same alphabet, finished first. */
export function lcsPattern(text: string, alphabet: Alphabet = new Alphabet(), alphabetSize?: number): LcsPattern {
  const codes = alphabet.codesOf(text);
  const size = alphabetSize ?? alphabet.size;
  const words = Math.max(1, Math.ceil(text.length / BITS));
  const masks = new Int32Array(size * words);
  const counts = new Int32Array(size);
  for (let i = 0; i < codes.length; i++) {
    masks[codes[i] * words + Math.floor(i / BITS)] |= 1 << i % BITS;
    counts[codes[i]]++;
  }
  return { text, words, codes, masks, counts };
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Bits used per word of the bit vectors. */
const BITS = 30;
const FULL = (1 << BITS) - 1;

function zeroBits(V: Int32Array, W: number, m: number): number {
  let ones = 0;
  for (let w = 0; w < W; w++) {
    const bits = Math.min(BITS, m - w * BITS);
    ones += popcount(V[w] & ((1 << bits) - 1));
  }
  return m - ones;
}


/**
 * LCS length of p.text and the characters `b` (alphabet indices of the same alphabet); stops
 * early, returning an upper bound below `needed`, once `needed` can no longer be reached.
 * Hyyrö's recurrence per character of b: U = V & M[c]; V = (V + U) | (V − U), the sum carried
 * across words; the LCS is the number of zero bits of V.
 */
function lcsCodes(p: LcsPattern, b: Int32Array, needed = 0, scratch?: Int32Array): number {
  const m = p.text.length;
  if (m === 0 || b.length === 0) return 0;
  const W = p.words;
  const V = scratch !== undefined && scratch.length >= W ? scratch : new Int32Array(W);
  V.fill(FULL, 0, W);
  const masks = p.masks;
  const letters = masks.length / W;
  for (let j = 0; j < b.length; j++) {
    const c = b[j];
    if (c < letters) {
      const base = c * W;
      let carry = 0;
      for (let w = 0; w < W; w++) {
        const v = V[w];
        const M = masks[base + w];
        const sum = v + (v & M) + carry; // < 2^31: stays a small integer
        carry = sum >>> BITS;
        V[w] = (sum & FULL) | (v & ~M);
      }
    }
    if (needed > 0 && (j & 31) === 31) {
      const bound = zeroBits(V, W, m) + (b.length - 1 - j);
      if (bound < needed) return bound;
    }
  }
  return zeroBits(V, W, m);
}

/** Length of the longest common subsequence of p.text and b. */
export function lcsLength(p: LcsPattern, b: string): number {
  const alphabet = new Alphabet();
  alphabet.codesOf(p.text);
  const q = lcsPattern(p.text, alphabet);
  return lcsCodes(q, alphabet.codesOf(b));
}

/** token_sort_ratio of two already-keyed patterns (same alphabet), 0–100. */
export function ratioOfKeys(a: LcsPattern, b: LcsPattern): number {
  const total = a.text.length + b.text.length;
  if (total === 0) return 100;
  return (200 * lcsCodes(a, b.codes)) / total;
}

export function tokenSortRatio(a: string, b: string): number {
  const alphabet = new Alphabet();
  const ka = tokenSortKey(a);
  const kb = tokenSortKey(b);
  alphabet.codesOf(ka + kb);
  return ratioOfKeys(lcsPattern(ka, alphabet), lcsPattern(kb, alphabet));
}

/** Upper bound on the ratio from shared letter counts. */
function ratioBound(a: LcsPattern, b: LcsPattern): number {
  const total = a.text.length + b.text.length;
  if (total === 0) return 100;
  let shared = 0;
  const n = Math.min(a.counts.length, b.counts.length);
  for (let c = 0; c < n; c++) shared += Math.min(a.counts[c], b.counts[c]);
  return (200 * shared) / total;
}

export interface NearPair {
  a: number;
  b: number;
  ratio: number;
}

/**
 * Pairs (a < b) of `texts` with token-sort ratio ≥ threshold, or, with `others`, pairs (a in
 * texts, b in others). Exact duplicates (equal keys) are included with ratio 100.
 */
export function nearDuplicatePairs(texts: readonly string[], threshold: number, others?: readonly string[]): NearPair[] {
  const alphabet = new Alphabet();
  const keysA = texts.map(tokenSortKey);
  const keysB = others === undefined ? keysA : others.map(tokenSortKey);
  for (const k of [...keysA, ...keysB]) alphabet.codesOf(k);
  const A = keysA.map((k) => lcsPattern(k, alphabet));
  const B = others === undefined ? A : keysB.map((k) => lcsPattern(k, alphabet));
  const scratch = new Int32Array(Math.max(1, ...A.map((p) => p.words)));
  const lenOrder = B.map((_, i) => i).sort((x, y) => B[x].text.length - B[y].text.length);
  const lens = lenOrder.map((i) => B[i].text.length);
  const pairs: NearPair[] = [];
  for (let i = 0; i < A.length; i++) {
    const la = A[i].text.length;
    // ratio ≥ t needs 2·min/(la+lb) ≥ t/100: lb in [la·t/(200−t), la·(200−t)/t].
    const lo = Math.ceil((la * threshold) / (200 - threshold) - 1e-9);
    const hi = threshold > 0 ? Math.floor((la * (200 - threshold)) / threshold + 1e-9) : Infinity;
    let k = lowerBound(lens, lo);
    for (; k < lens.length && lens[k] <= hi; k++) {
      const j = lenOrder[k];
      if (others === undefined && j <= i) continue;
      if (ratioBound(A[i], B[j]) < threshold) continue;
      const total = la + B[j].text.length;
      const r = A[i].text === B[j].text ? 100 : (200 * lcsCodes(A[i], B[j].codes, Math.ceil((threshold * total) / 200 - 1e-9), scratch)) / total;
      if (r >= threshold) pairs.push({ a: i, b: j, ratio: r });
    }
  }
  return pairs.sort((x, y) => x.a - y.a || x.b - y.b);
}

function lowerBound(sorted: readonly number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
