import { describe, expect, it } from 'vitest';
import { SamplerRng } from '../../src/generate/rng.js';
import { checkSamplingOptions, GREEDY, Sampler, type SamplingOptions } from '../../src/generate/sampling.js';
import { ConfigError } from '../../src/errors.js';
import { Rng } from '../helpers/random.js';

/**
 * The float64 reference of the sampler, written from llama.cpp's definitions with plain arrays:
 * penalties → top_k → top_p → temperature; ties ordered by id. Returns the drawable ids (best
 * first) and their probabilities.
 */
function reference(logits: ArrayLike<number>, history: readonly number[], o: SamplingOptions): { ids: number[]; probs: number[] } {
  const z = Array.from(logits, Number);
  if (o.repeatPenalty !== 1 && o.repeatLastN !== 0) {
    const window = o.repeatLastN < 0 ? history : history.slice(Math.max(0, history.length - o.repeatLastN));
    for (const id of new Set(window)) z[id] = z[id] > 0 ? z[id] / o.repeatPenalty : z[id] * o.repeatPenalty;
  }
  let ids = z.map((_, i) => i).sort((a, b) => z[b] - z[a] || a - b);
  if (o.temperature === 0) return { ids: [ids[0]], probs: [1] };
  if (o.topK > 0) ids = ids.slice(0, o.topK);
  const softmax = (list: number[], t: number): number[] => {
    const m = Math.max(...list.map((i) => z[i]));
    const e = list.map((i) => Math.exp((z[i] - m) / t));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  if (o.topP < 1) {
    const p = softmax(ids, 1);
    let cum = 0;
    let keep = ids.length;
    for (let i = 0; i < ids.length; i++) {
      cum += p[i];
      if (cum >= o.topP) {
        keep = i + 1;
        break;
      }
    }
    ids = ids.slice(0, keep);
  }
  return { ids, probs: softmax(ids, o.temperature) };
}

const base: SamplingOptions = { temperature: 1, topK: 0, topP: 1, repeatPenalty: 1, repeatLastN: 64 };

/** Random logits of spread ~3 with a few exact ties, and a history of recent tokens. */
function randomCase(seed: number, V: number): { logits: Float32Array; history: number[] } {
  const rng = new Rng(seed);
  const logits = rng.f32(V, 3);
  for (let i = 0; i < 5; i++) logits[rng.int(0, V)] = logits[rng.int(0, V)];
  const history = Array.from({ length: 90 }, () => rng.int(0, V));
  return { logits, history };
}

describe('sampling', () => {
  const settings: [string, Partial<SamplingOptions>][] = [
    ['temperature only', {}],
    ['temperature 0.7, top_k 20', { temperature: 0.7, topK: 20 }],
    ['top_p 0.9', { topP: 0.9 }],
    ['top_k 40, top_p 0.5, temperature 1.3', { topK: 40, topP: 0.5, temperature: 1.3 }],
    ['repeat penalty 1.25 over 64 tokens, top_k 20, top_p 0.9, temperature 0.8 (the Modelfile)', { repeatPenalty: 1.25, repeatLastN: 64, topK: 20, topP: 0.9, temperature: 0.8 }],
    ['repeat penalty 2 over the whole history', { repeatPenalty: 2, repeatLastN: -1, topP: 0.95 }],
    ['penalty below 1 (a bonus), window 10', { repeatPenalty: 0.5, repeatLastN: 10, topK: 50 }],
    ['top_k larger than the vocabulary', { topK: 5000, topP: 0.3 }],
    ['greedy with a repeat penalty', { temperature: 0, repeatPenalty: 1.5 }],
  ];
  for (const [name, o] of settings) {
    it(`distribution equals the float64 reference: ${name}`, () => {
      const options = { ...base, ...o };
      for (const seed of [1, 2, 3]) {
        const { logits, history } = randomCase(seed, 997);
        const ours = new Sampler(997, options, new SamplerRng(0)).distribution(logits, history);
        const ref = reference(logits, history, options);
        expect(Array.from(ours.ids)).toEqual(ref.ids);
        ours.probs.forEach((p, i) => expect(Math.abs(p - ref.probs[i]), `probability of ${ref.ids[i]}`).toBeLessThanOrEqual(1e-12));
      }
    });
  }

  it('repeat penalty: divides positive logits, multiplies negative ones, once per distinct token in the window', () => {
    // logits 2, −2, 0.5, 3, 1; history … 4 | 0 1 1 with a window of 3: token 4 is outside it.
    const logits = [2, -2, 0.5, 3, 1];
    const s = new Sampler(5, { ...base, temperature: 1, repeatPenalty: 2, repeatLastN: 3 }, new SamplerRng(0));
    const d = s.distribution(logits, [4, 0, 1, 1]);
    const penalised = [1, -4, 0.5, 3, 1];
    const e = penalised.map((v) => Math.exp(v));
    const sum = e.reduce((a, b) => a + b, 0);
    for (let i = 0; i < d.ids.length; i++) expect(d.probs[i]).toBeCloseTo(e[d.ids[i]] / sum, 14);
    // Greedy after the penalty. logits 2, −2, 0.5, 3, 1.5: penalising 3 (3 → 1.5) makes 0 the best;
    // penalising 0 too (2 → 1) leaves 3 and 4 tied at 1.5, and the lower id wins.
    const g = new Sampler(5, { ...GREEDY, repeatPenalty: 2, repeatLastN: 2 }, new SamplerRng(0));
    const tie = [2, -2, 0.5, 3, 1.5];
    expect(g.sample(tie, [])).toBe(3);
    expect(g.sample(tie, [3])).toBe(0);
    expect(g.sample(tie, [0, 3])).toBe(3);
    expect(g.sample(tie, [0, 3, 1])).toBe(0); // the window of 2 holds 3 and 1 only
    // A negative logit is multiplied: −0.5 → −1 falls below −0.6.
    const g3 = new Sampler(3, { ...GREEDY, repeatPenalty: 2, repeatLastN: 2 }, new SamplerRng(0));
    expect(g3.sample([-0.5, -0.6, -3], [])).toBe(0);
    expect(g3.sample([-0.5, -0.6, -3], [0])).toBe(1);
  });

  it('draws follow the distribution (20,000 draws, each frequency within 5 standard errors)', () => {
    const V = 12;
    const { logits, history } = randomCase(7, V);
    const options = { ...base, temperature: 0.9, topK: 8, topP: 0.95, repeatPenalty: 1.3, repeatLastN: 5 };
    const s = new Sampler(V, options, new SamplerRng(42));
    const ref = reference(logits, history, options);
    const counts = new Float64Array(V);
    const N = 20000;
    for (let i = 0; i < N; i++) counts[s.sample(logits, history)]++;
    const p = new Float64Array(V);
    ref.ids.forEach((id, i) => (p[id] = ref.probs[i]));
    for (let id = 0; id < V; id++) {
      const se = Math.sqrt((p[id] * (1 - p[id])) / N);
      expect(Math.abs(counts[id] / N - p[id]), `token ${id}: ${counts[id]} draws, p = ${p[id]}`).toBeLessThanOrEqual(5 * se + 1e-12);
    }
    expect(ref.ids.length).toBeGreaterThan(2);
  });

  it('the same seed gives the same draws; another seed other draws', () => {
    const { logits, history } = randomCase(9, 300);
    const options = { ...base, temperature: 1.5 };
    const draw = (seed: number) => {
      const s = new Sampler(300, options, new SamplerRng(seed));
      return Array.from({ length: 50 }, () => s.sample(logits, history));
    };
    expect(draw(123)).toEqual(draw(123));
    expect(draw(123)).not.toEqual(draw(124));
  });

  it('the generator is uniform on [0, 1) and reproducible', () => {
    const a = new SamplerRng(2024);
    const b = new SamplerRng(2024);
    const N = 100000;
    let sum = 0;
    let sq = 0;
    const bins = new Float64Array(10);
    for (let i = 0; i < N; i++) {
      const u = a.next();
      expect(u).toBe(b.next());
      expect(u >= 0 && u < 1).toBe(true);
      sum += u;
      sq += u * u;
      bins[Math.floor(u * 10)]++;
    }
    // mean 1/2 and variance 1/12 of the uniform distribution, within ~5 standard errors
    expect(Math.abs(sum / N - 0.5)).toBeLessThan(5 * Math.sqrt(1 / 12 / N));
    expect(Math.abs(sq / N - sum ** 2 / N ** 2 - 1 / 12)).toBeLessThan(0.003);
    for (const c of bins) expect(Math.abs(c / N - 0.1)).toBeLessThan(5 * Math.sqrt(0.09 / N));
  });

  it('refuses options out of range, naming them', () => {
    expect(() => checkSamplingOptions({ ...base, temperature: -1 })).toThrow(ConfigError);
    expect(() => checkSamplingOptions({ ...base, topP: 0 })).toThrow(/top_p/);
    expect(() => checkSamplingOptions({ ...base, topK: 2.5 })).toThrow(/top_k/);
    expect(() => checkSamplingOptions({ ...base, repeatPenalty: 0 })).toThrow(/repeat_penalty/);
    expect(() => checkSamplingOptions({ ...base, repeatLastN: -2 })).toThrow(/repeat_last_n/);
    expect(() => new Sampler(4, base, new SamplerRng(0)).sample([1, 2, 3], [])).toThrow(/3 logits for a vocabulary of 4/);
  });
});
