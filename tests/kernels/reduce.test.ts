import { describe, expect, it } from 'vitest';
import { SumReduce, sumReduceRef } from '../../src/kernels/reduce.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { ShapeError } from '../../src/errors.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Bound on an f32 sum's error: ~(n / 1024 sequential + 4 + 8 tree levels) roundings of Σ|x|, with margin. */
function sumTolerance(values: Float32Array): number {
  let abs = 0;
  for (const v of values) abs += Math.abs(v);
  return (values.length / 1024 + 16) * 2 ** -24 * abs;
}

describe('sum reduce', () => {
  // tiny, realistic (per-row losses of a chunk), awkward and large (not a multiple of 4·WG)
  for (const n of [1, 1000, 100003]) {
    for (const kind of ['losses', 'signed'] as const) {
      it(`matches the float64 sum of ${n} ${kind} values, identically on a second run`, async () => {
        const gpu = await testGpu();
        const rng = new Rng(n + (kind === 'signed' ? 1 : 0));
        const values = kind === 'losses' ? Float32Array.from({ length: n }, () => rng.uniform(0, 12)) : rng.f32(n, 1);
        const out = gpu.tensor('sum', [1], 'f32');
        gpu.fill32(out, NAN_WORD);
        const sum = await SumReduce.create(gpu);
        const d = sum.forward('loss sum', { out, values: gpu.tensorFrom('values', [n], 'f32', values) }, { n, accumulate: false });
        submitDispatches(gpu, [d]);
        const first = await gpu.readF32(out);
        const ref = sumReduceRef(values);
        expect(Math.abs(first[0] - ref), `got ${first[0]}, expected ${ref}`).toBeLessThanOrEqual(sumTolerance(values));
        gpu.fill32(out, NAN_WORD);
        submitDispatches(gpu, [d]);
        const second = await gpu.readF32(out);
        expect(new Uint32Array(second.buffer)[0]).toBe(new Uint32Array(first.buffer)[0]);
      });
    }
  }

  it('accumulates chunks into an existing sum', async () => {
    const gpu = await testGpu();
    const rng = new Rng(42);
    const chunks = [rng.f32(777, 2), rng.f32(1), rng.f32(3000, 2)];
    const out = gpu.tensorFrom('sum', [1], 'f32', Float32Array.of(5.5));
    const sum = await SumReduce.create(gpu);
    const list = chunks.map((c, i) => sum.forward(`chunk ${i}`, { out, values: gpu.tensorFrom(`chunk ${i}`, [c.length], 'f32', c) }, { n: c.length, accumulate: true }));
    submitDispatches(gpu, list);
    const got = (await gpu.readF32(out))[0];
    const all = Float32Array.from(chunks.flatMap((c) => Array.from(c)));
    const ref = sumReduceRef(all, 5.5);
    expect(Math.abs(got - ref), `got ${got}, expected ${ref}`).toBeLessThanOrEqual(sumTolerance(all) + 4 * 2 ** -24 * 5.5);
  });

  it('rejects a count that disagrees with the values tensor', async () => {
    const gpu = await testGpu();
    const sum = await SumReduce.create(gpu);
    const out = gpu.tensor('sum', [1], 'f32');
    const values = gpu.tensor('losses', [10], 'f32');
    expect(() => sum.forward('loss sum', { out, values }, { n: 11, accumulate: false })).toThrow(ShapeError);
    expect(() => sum.forward('loss sum', { out, values }, { n: 11, accumulate: false })).toThrow(/losses is f32 \[10\], expected f32 of 11 elements/);
  });
});
