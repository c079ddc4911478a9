import { ConfigError } from '../errors.js';
import { SEED_PARAMETERS } from '../config/sampling-parameters.js';
import type { SamplerRng } from './rng.js';

/**
 * Next-token sampling on the host, in float64, with llama.cpp's semantics and its default order
 * of samplers (common/sampling: penalties → top_k → top_p → temperature → draw):
 *   1. repeat penalty: every distinct token among the last `repeatLastN` tokens of the sequence
 *      (prompt included; −1 = all of it, 0 = none) has its logit divided by `repeatPenalty` when
 *      positive, multiplied by it otherwise;
 *   2. top_k: keep the k highest logits (k ≤ 0: all);
 *   3. top_p: softmax over what is left, keep the smallest prefix (highest first) whose
 *      probability reaches p (p ≥ 1: all);
 *   4. temperature: logits / T, softmax, one draw from the seeded generator. T = 0 is greedy: the
 *      highest penalised logit (the lowest id on a tie), no draw.
 * Ties in the ordering go to the lower token id. min_p, typical-p, DRY and the frequency/presence
 * penalties are not implemented (Ollama's Modelfile leaves them off).
 *
 * Cost per token (V = 151,936): the penalty touches ≤ repeatLastN logits; top_k is one pass with a
 * k-element heap (O(V log k)); without top_k, top_p sorts only the ids within a few nats of the
 * best (bucketed by logit first). Measured in Node 20 on this project's CPU machine (V = 151,936):
 * greedy 0.4 ms, the Modelfile's settings 0.7 ms per token. The logits come from the GPU as V f32 (0.6 MB per token, see ChunkProgram).
 */
export interface SamplingOptions {
  /** 0 = greedy. */
  readonly temperature: number;
  /** ≤ 0 = off. */
  readonly topK: number;
  /** ≥ 1 = off. */
  readonly topP: number;
  /** 1 = off. */
  readonly repeatPenalty: number;
  /** Window of the repeat penalty in tokens: 0 = off, −1 = the whole sequence. */
  readonly repeatLastN: number;
}

/** The Ollama Modelfile's parameters (the seed's v7 values; see export/modelfile.ts) and llama.cpp's repeat_last_n of 64. */
export const DEFAULT_SAMPLING: SamplingOptions = Object.freeze({
  temperature: SEED_PARAMETERS.temperature,
  topK: SEED_PARAMETERS.top_k,
  topP: SEED_PARAMETERS.top_p,
  repeatPenalty: SEED_PARAMETERS.repeat_penalty,
  repeatLastN: 64,
});

/** Greedy decoding (temperature 0, nothing else). */
export const GREEDY: SamplingOptions = Object.freeze({ temperature: 0, topK: 0, topP: 1, repeatPenalty: 1, repeatLastN: 0 });

/** Throws a ConfigError naming the first option out of range. */
export function checkSamplingOptions(o: SamplingOptions): void {
  const bad = (what: string, v: number, expected: string): never => {
    throw new ConfigError(`sampling: ${what} = ${v}; expected ${expected}`);
  };
  if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) bad('temperature', o.temperature, 'a number ≥ 0 (0 = greedy)');
  if (!Number.isInteger(o.topK)) bad('top_k', o.topK, 'a whole number (0 = off)');
  if (!(o.topP > 0 && o.topP <= 1)) bad('top_p', o.topP, 'a number in (0, 1] (1 = off)');
  if (!(Number.isFinite(o.repeatPenalty) && o.repeatPenalty > 0)) bad('repeat_penalty', o.repeatPenalty, 'a number > 0 (1 = off)');
  if (!(Number.isInteger(o.repeatLastN) && o.repeatLastN >= -1)) bad('repeat_last_n', o.repeatLastN, 'a whole number ≥ −1 (0 = off, −1 = all)');
}

/** The tokens that can be drawn and their probabilities, highest first (probabilities sum to 1). */
export interface Distribution {
  readonly ids: Int32Array;
  readonly probs: Float64Array;
}

export class Sampler {
  /** (V) f64 — the penalised logits of the current step. */
  private readonly scratch: Float64Array;

  constructor(
    readonly vocab: number,
    readonly options: SamplingOptions,
    private readonly rng: SamplerRng,
  ) {
    checkSamplingOptions(options);
    this.scratch = new Float64Array(vocab);
  }

  /** The next token after `history` (prompt and generated tokens so far) given its logits (V). */
  sample(logits: ArrayLike<number>, history: readonly number[]): number {
    const z = this.penalize(logits, history);
    if (this.options.temperature === 0) return argmax(z);
    const { ids, probs } = this.truncateAndSoften(z);
    const u = this.rng.next();
    let cum = 0;
    for (let i = 0; i < ids.length; i++) {
      cum += probs[i];
      if (u < cum) return ids[i];
    }
    return ids[ids.length - 1]; // u beyond the rounded total
  }

  /** The distribution `sample` draws from (one token with probability 1 when greedy). */
  distribution(logits: ArrayLike<number>, history: readonly number[]): Distribution {
    const z = this.penalize(logits, history);
    if (this.options.temperature === 0) return { ids: Int32Array.of(argmax(z)), probs: Float64Array.of(1) };
    const d = this.truncateAndSoften(z);
    if (d.sorted) return d;
    const order = sortedIds(z, Int32Array.from(d.ids));
    const pos = new Float64Array(this.vocab);
    d.ids.forEach((id, i) => (pos[id] = d.probs[i]));
    return { ids: order, probs: Float64Array.from(order, (id) => pos[id]) };
  }

  /** Step 1: the logits with the repeat penalty applied (in the scratch array). */
  private penalize(logits: ArrayLike<number>, history: readonly number[]): Float64Array {
    const z = this.scratch;
    if (logits.length !== this.vocab) throw new ConfigError(`sampling: ${logits.length} logits for a vocabulary of ${this.vocab}`);
    if (ArrayBuffer.isView(logits)) z.set(logits as unknown as ArrayLike<number>);
    else for (let i = 0; i < z.length; i++) z[i] = logits[i];
    const { repeatPenalty: penalty, repeatLastN } = this.options;
    if (penalty === 1 || repeatLastN === 0) return z;
    const from = repeatLastN < 0 ? 0 : Math.max(0, history.length - repeatLastN);
    const seen = new Set<number>();
    for (let i = from; i < history.length; i++) {
      const id = history[i];
      if (seen.has(id) || id < 0 || id >= z.length) continue;
      seen.add(id);
      z[id] = z[id] <= 0 ? z[id] * penalty : z[id] / penalty;
    }
    return z;
  }

  /** Steps 2–4 for temperature > 0: candidates and their probabilities (sorted unless nothing was cut). */
  private truncateAndSoften(z: Float64Array): Distribution & { sorted: boolean } {
    const { topK, topP, temperature } = this.options;
    const all = () => Int32Array.from({ length: z.length }, (_, i) => i);
    let ids: Int32Array;
    let sorted = true;
    const byTopK = topK > 0 && topK < z.length;
    if (byTopK) ids = topKIds(z, topK);
    else if (topP < 1) ids = nucleusSuperset(z, topP);
    else {
      ids = all();
      sorted = false;
    }
    if (topP < 1) {
      // softmax over every candidate left by top_k (all V without it), accumulated best first
      const { max, sum } = byTopK ? mass(z, ids) : mass(z);
      let cum = 0;
      let keep = -1;
      for (let i = 0; i < ids.length; i++) {
        cum += Math.exp(z[ids[i]] - max) / sum;
        if (cum >= topP) {
          keep = i + 1;
          break;
        }
      }
      if (keep < 0 && !byTopK && ids.length < z.length) return this.truncateAfterFullSort(z);
      ids = ids.subarray(0, keep < 0 ? ids.length : keep);
    }
    return { ids, probs: softmax(z, ids, temperature), sorted };
  }

  /** The top_p cut over all V ids sorted (the rare case where nucleusSuperset's rounding fell short). */
  private truncateAfterFullSort(z: Float64Array): Distribution & { sorted: boolean } {
    const ids = sortedIds(z, Int32Array.from({ length: z.length }, (_, i) => i));
    const { max, sum } = mass(z);
    let cum = 0;
    let keep = ids.length;
    for (let i = 0; i < ids.length; i++) {
      cum += Math.exp(z[ids[i]] - max) / sum;
      if (cum >= this.options.topP) {
        keep = i + 1;
        break;
      }
    }
    const kept = ids.subarray(0, keep);
    return { ids: kept, probs: softmax(z, kept, this.options.temperature), sorted: true };
  }
}

/** Max and Σ exp(z − max) over `ids` (all of z when undefined). */
function mass(z: Float64Array, ids?: Int32Array): { max: number; sum: number } {
  let max = -Infinity;
  let sum = 0;
  if (ids) {
    for (const id of ids) max = Math.max(max, z[id]);
    for (const id of ids) sum += Math.exp(z[id] - max);
  } else {
    for (let i = 0; i < z.length; i++) max = Math.max(max, z[i]);
    for (let i = 0; i < z.length; i++) sum += Math.exp(z[i] - max);
  }
  return { max, sum };
}

/**
 * The ids whose logit is within b + 1 of the maximum, sorted, for the smallest whole b whose ids
 * hold at least `p` of the probability: a prefix of the full ranking that contains the top_p
 * nucleus, found with one bucketed pass instead of sorting all V ids.
 */
function nucleusSuperset(z: Float64Array, p: number): Int32Array {
  const BUCKETS = 64;
  const { max, sum } = mass(z);
  const bucketMass = new Float64Array(BUCKETS + 1);
  for (let i = 0; i < z.length; i++) bucketMass[Math.min(BUCKETS, Math.floor(max - z[i]))] += Math.exp(z[i] - max);
  let cum = 0;
  let last = BUCKETS;
  for (let b = 0; b <= BUCKETS; b++) {
    cum += bucketMass[b];
    if (cum >= p * sum) {
      last = b;
      break;
    }
  }
  const ids: number[] = [];
  for (let i = 0; i < z.length; i++) if (last === BUCKETS || max - z[i] < last + 1) ids.push(i);
  return sortedIds(z, Int32Array.from(ids));
}

/** Index of the largest value; the lowest index on a tie. */
export function argmax(z: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < z.length; i++) if (z[i] > z[best]) best = i;
  return best;
}

/** softmax(z[ids] / temperature) in float64, the maximum subtracted. */
function softmax(z: Float64Array, ids: Int32Array, temperature: number): Float64Array {
  let max = -Infinity;
  for (const id of ids) max = Math.max(max, z[id]);
  const p = new Float64Array(ids.length);
  let sum = 0;
  for (let i = 0; i < ids.length; i++) sum += p[i] = Math.exp((z[ids[i]] - max) / temperature);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** `a` ranks before `b`: higher value, or the same value and a lower id. */
function ranksBefore(z: Float64Array, a: number, b: number): boolean {
  return z[a] > z[b] || (z[a] === z[b] && a < b);
}

/** `ids` sorted by rank (in place), returned. */
function sortedIds(z: Float64Array, ids: Int32Array): Int32Array {
  return ids.sort((a, b) => (ranksBefore(z, a, b) ? -1 : ranksBefore(z, b, a) ? 1 : 0));
}

/** The k best ids by rank, best first: one pass with a heap whose root is the worst kept id. */
function topKIds(z: Float64Array, k: number): Int32Array {
  const heap = new Int32Array(k);
  let size = 0;
  const worse = (a: number, b: number) => ranksBefore(z, b, a);
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < size && worse(heap[l], heap[m])) m = l;
      if (r < size && worse(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let id = 0; id < k; id++) {
    let i = size++;
    heap[i] = id;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!worse(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }
  // A tie with the worst kept id never displaces it: ids come in increasing order.
  let threshold = z[heap[0]];
  for (let id = k; id < z.length; id++) {
    if (z[id] > threshold) {
      heap[0] = id;
      siftDown(0);
      threshold = z[heap[0]];
    }
  }
  return sortedIds(z, heap);
}
