import { describe, expect, it } from 'vitest';
import { Embedding, embeddingForwardRef } from '../../src/kernels/embedding.js';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { bf16ToF32Array, f32ToBf16Array } from '../../src/model/bf16.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Gathers `ids` from a seeded bf16 table on the GPU; returns the output and the reference. */
async function gather(gpu: Gpu, vocab: number, hidden: number, ids: Int32Array, gridWidth?: number): Promise<[Float32Array, Float64Array]> {
  const rng = new Rng(vocab * 31 + hidden);
  const bits = f32ToBf16Array(rng.f32(vocab * hidden, 0.05));
  const table = gpu.tensorFrom('table', [vocab, hidden], 'bf16x2', bits);
  const idsT = gpu.tensorFrom('ids', [ids.length], 'i32', ids);
  const x = gpu.tensor('x', [ids.length, hidden], 'f32');
  gpu.fill32(x, NAN_WORD);
  const emb = await Embedding.create(gpu, { gridWidth });
  submitDispatches(gpu, [emb.forward('embed_tokens', { x, table, ids: idsT }, { tokens: ids.length, hidden, vocab })]);
  return [await gpu.readF32(x), embeddingForwardRef(bf16ToF32Array(bits), ids, vocab, hidden)];
}

function randomIds(seed: number, n: number, vocab: number): Int32Array {
  const rng = new Rng(seed);
  // the first and last rows of the table always appear (edges of the table)
  return Int32Array.from({ length: n }, (_, i) => (i === 0 ? 0 : i === n - 1 ? vocab - 1 : rng.int(0, vocab)));
}

describe('embedding forward', () => {
  // tiny, the fixture's (V = 151936, D = 32), odd D (rows start mid-word), D an exact multiple of the
  // 4·256-column unroll, realistic D = 2560
  for (const [vocab, hidden, tokens] of [[10, 4, 3], [151936, 32, 48], [101, 37, 300], [97, 1, 5], [50, 1024, 3], [1000, 2560, 33]] as const) {
    it(`gathers exactly at V=${vocab}, D=${hidden}, N=${tokens}`, async () => {
      const [out, ref] = await gather(await testGpu(), vocab, hidden, randomIds(tokens, tokens, vocab));
      // a bf16 → f32 conversion is exact
      expectClose('x', out, ref, 0, 0);
    });
  }

  it('folds a grid past gridWidth into 2D', async () => {
    // 77 tokens = 77 workgroups as a 4 × 20 grid (3 spare)
    const [out, ref] = await gather(await testGpu(), 50, 37, randomIds(5, 77, 50), 4);
    expectClose('x', out, ref, 0, 0);
  });

  it('writes NaN rows for ids outside [0, V) and reads nothing there', async () => {
    const vocab = 20;
    const hidden = 7;
    const ids = Int32Array.from([3, -1, 19, 20, 1 << 30, 0]);
    const [out] = await gather(await testGpu(), vocab, hidden, ids);
    const ref = embeddingForwardRef(bf16ToF32Array(f32ToBf16Array(new Rng(vocab * 31 + hidden).f32(vocab * hidden, 0.05))), ids, vocab, hidden);
    for (let n = 0; n < ids.length; n++) {
      const row = Array.from(out.subarray(n * hidden, (n + 1) * hidden));
      const valid = ids[n] >= 0 && ids[n] < vocab;
      if (valid) expect(row).toEqual(Array.from(ref.subarray(n * hidden, (n + 1) * hidden)));
      else expect(row.every(Number.isNaN), `row ${n} (id ${ids[n]})`).toBe(true);
    }
  });

  it('rejects a table whose width differs from D', async () => {
    const gpu = await testGpu();
    const emb = await Embedding.create(gpu);
    const x = gpu.tensor('x', [2, 8], 'f32');
    const table = gpu.tensor('embed_tokens.weight', [10, 16], 'bf16x2');
    const ids = gpu.tensor('ids', [2], 'i32');
    expect(() => emb.forward('embed', { x, table, ids }, { tokens: 2, hidden: 8, vocab: 10 })).toThrow(
      /embed \(embeddingForward\): embed_tokens.weight has shape \[10, 16\], expected \[10, 8\]/,
    );
  });
});
