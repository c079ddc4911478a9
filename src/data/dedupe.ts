/**
 * Exact and near duplicates by token-sort ratio, the measure of the seed's dataset builder
 * (thefuzz / rapidfuzz `token_sort_ratio` with default processing): lowercase, everything but
 * letters and digits → space, words sorted and joined by one space; then
 *   ratio = 100 · 2·LCS(a, b) / (|a| + |b|)            (Indel similarity)
 * LCS is computed bit-parallel (Hyyrö 2004): one pass over b with |a|/32 machine words per
 * character. Two strict upper bounds skip most pairs first: 2·min(|a|,|b|)/(|a|+|b|) and the
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

/** A string prepared for repeated LCS queries as the first argument. */
export interface LcsPattern {
  text: string;
  words: number;
  /** char code → bit mask (words × u32) of the positions holding that character. */
  masks: Map<number, Uint32Array>;
  /** Character counts over `alphabet` slots (for the count bound). */
  counts: Map<number, number>;
}

export function lcsPattern(text: string): LcsPattern {
  const words = Math.max(1, Math.ceil(text.length / 32));
  const masks = new Map<number, Uint32Array>();
  const counts = new Map<number, number>();
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    let m = masks.get(c);
    if (m === undefined) masks.set(c, (m = new Uint32Array(words)));
    m[i >>> 5] |= 1 << (i & 31);
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  return { text, words, masks, counts };
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** Length of the longest common subsequence of p.text and b. */
export function lcsLength(p: LcsPattern, b: string): number {
  const m = p.text.length;
  if (m === 0 || b.length === 0) return 0;
  const W = p.words;
  const V = new Uint32Array(W).fill(0xffffffff);
  for (let j = 0; j < b.length; j++) {
    const M = p.masks.get(b.charCodeAt(j));
    if (M === undefined) continue; // U = 0: V unchanged
    let carry = 0;
    for (let w = 0; w < W; w++) {
      const v = V[w];
      const u = v & M[w];
      const sum = v + (u >>> 0) + carry; // < 2^33, exact in a double
      carry = sum > 0xffffffff ? 1 : 0;
      V[w] = (sum >>> 0) | (v & ~M[w]);
    }
  }
  let ones = 0;
  for (let w = 0; w < W; w++) {
    const bits = Math.min(32, m - w * 32);
    const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
    ones += popcount(V[w] & mask);
  }
  return m - ones;
}

/** token_sort_ratio of two already-keyed strings, 0–100. */
export function ratioOfKeys(a: LcsPattern, b: LcsPattern): number {
  const total = a.text.length + b.text.length;
  if (total === 0) return 100;
  return (200 * lcsLength(a, b.text)) / total;
}

export function tokenSortRatio(a: string, b: string): number {
  return ratioOfKeys(lcsPattern(tokenSortKey(a)), lcsPattern(tokenSortKey(b)));
}

/** Upper bound on the ratio from lengths and shared character counts. */
function ratioBound(a: LcsPattern, b: LcsPattern): number {
  const total = a.text.length + b.text.length;
  if (total === 0) return 100;
  let shared = 0;
  const [small, large] = a.counts.size <= b.counts.size ? [a.counts, b.counts] : [b.counts, a.counts];
  for (const [c, n] of small) shared += Math.min(n, large.get(c) ?? 0);
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
  const A = texts.map((t) => lcsPattern(tokenSortKey(t)));
  const B = others === undefined ? A : others.map((t) => lcsPattern(tokenSortKey(t)));
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
      const r = A[i].text === B[j].text ? 100 : ratioOfKeys(A[i], B[j]);
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
