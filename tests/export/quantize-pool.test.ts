import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ExportError } from '../../src/errors.js';
import { quantizeRows } from '../../src/export/gguf-quants.js';
import { applyLoraDelta } from '../../src/export/lora-delta.js';
import { encodeChunk, encodeInOrder, QuantizePool, type NamedJob } from '../../src/export/quantize-pool.js';
import { Rng } from '../helpers/random.js';

/**
 * The pool that spreads chunk encoding over worker threads. Under vitest the TypeScript worker
 * cannot start (no compiled quantize-worker.js next to the sources), so the default pool runs
 * inline; the threading itself is checked with a stand-in worker script that answers F32 bytes
 * after a random delay (results must still arrive in order) and fails on request.
 */
const dir = mkdtempSync(join(tmpdir(), 'pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const STUB = `
import { parentPort } from 'node:worker_threads';
parentPort.on('message', ({ id, job }) => {
  if (job.where === 'fail') { parentPort.postMessage({ id, error: 'asked to fail' }); return; }
  setTimeout(() => {
    const bytes = new Uint8Array(job.values.buffer.slice(0));
    parentPort.postMessage({ id, bytes }, [bytes.buffer]);
  }, Math.random() * 5);
});
`;

function jobsOf(values: Float32Array[], name = 't'): AsyncIterable<NamedJob> {
  return (async function* () {
    for (const v of values) yield { name, job: { type: 'F32' as const, values: v.slice(), nPerRow: v.length, where: name } };
  })();
}

describe('QuantizePool', () => {
  it('runs inline when the compiled worker is absent; encodeChunk adds the LoRA term first', async () => {
    const pool = QuantizePool.create({ threads: 4 });
    expect(pool.parallel).toBe(false);
    const rng = new Rng(3);
    const values = rng.f32(4 * 256, 0.1);
    const delta = { a: rng.f32(2 * 256, 0.1), b: rng.f32(4 * 2, 0.1), r: 2, scale: 2 };
    const bytes = await pool.run({ type: 'Q6_K', values: values.slice(), nPerRow: 256, delta, where: 'x' });
    const merged = values.slice();
    applyLoraDelta(merged, delta);
    expect(bytes).toEqual(quantizeRows('Q6_K', merged, 256));
    expect(encodeChunk({ type: 'F32', values: merged.slice(), nPerRow: 256, where: 'x' })).toEqual(new Uint8Array(merged.buffer));
    await pool.close();
  });

  it('with worker threads: results in job order, many jobs, errors surface as ExportError', async () => {
    const url = pathToFileURL(join(dir, 'stub-worker.mjs'));
    writeFileSync(url, STUB);
    const pool = QuantizePool.create({ threads: 3, workerUrl: url });
    try {
      expect(pool.parallel).toBe(true);
      expect(pool.depth).toBe(6);
      const rng = new Rng(9);
      const chunks = Array.from({ length: 40 }, (_, i) => rng.f32(8 + (i % 5), 1));
      const got: Uint8Array[] = [];
      await encodeInOrder(pool, jobsOf(chunks), async (name, bytes) => {
        expect(name).toBe('t');
        got.push(bytes);
      });
      expect(got.map((b) => Array.from(new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)))).toEqual(chunks.map((c) => Array.from(c)));
      // A view into a larger buffer is copied, not transferred away from its owner.
      const big = new Float32Array(16).fill(2);
      const view = big.subarray(4, 8);
      expect(new Float32Array((await pool.run({ type: 'F32', values: view, nPerRow: 4, where: 'v' })).buffer)).toEqual(new Float32Array(4).fill(2));
      expect(big.length).toBe(16);
      await expect(pool.run({ type: 'F32', values: new Float32Array(4), nPerRow: 4, where: 'fail' })).rejects.toThrow(ExportError);
      // The sink failing stops the stream and leaves no unhandled rejection.
      await expect(encodeInOrder(pool, jobsOf(chunks), async () => Promise.reject(new ExportError('disk full')))).rejects.toThrow(/disk full/);
    } finally {
      await pool.close();
    }
    await expect(pool.run({ type: 'F32', values: new Float32Array(4), nPerRow: 4, where: 'x' })).rejects.toThrow(/closed/);
  });
});
