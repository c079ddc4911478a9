/**
 * Subgroup-matrix (tensor-core) input-gradient benchmark: dX (M, K) = dY (M, N) · dequant(W) (N, K).
 *
 *   npx tsc -p . && node dist/bench/matmul-sgm-input.js [--reps N] [--json FILE] [--force] [--formats nf4,bf16]
 *       [--tile 256x128x32/8x1sg/2x8f,...] [--slices plan,1,2,4] [--prefetch auto,on,off] [--shapes q_proj,gate/up]
 *       [--robustness]
 *
 * Times MatmulSgmInput.input at the input gradients of Qwen3-4B's projections with M = 2048 tokens —
 * reduction N → output K: 4096 → 2560 (q_proj), 1024 → 2560 (k/v_proj), 9728 → 2560 (gate/up),
 * 2560 → 4096 (o_proj), 2560 → 9728 (down_proj) — for every compiled tile, reduction split
 * ('plan' = what MatmulSgmInput.plan picks; a forced count applies to every tile) and prefetch
 * setting (auto: sgmInputPrefetch); `*` marks the planned variant. dY is random at gradient size (±1e-6) with the row scales
 * of issue 11 item 4 (computed here on the CPU). After a warm-up of about a second of dispatches,
 * each timing is the median of --reps (default 10) timestamp-query passes of 10 calls each (a call
 * is 1 dispatch, or 2 with a split: partial sums and their sum). Prints ms, TFLOP/s (2·M·N·K / time)
 * and the largest error at 64 sampled outputs against a float64 dot product, relative to Σ|dY·W|
 * and as a multiple of the relative part of sgmInputErrorBound. --json refuses to overwrite an
 * existing file unless --force.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Dispatch } from '../src/kernels/dispatch.js';
import { submitDispatches, timeDispatches } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import type { StoredFormat } from '../src/kernels/matmul.js';
import { parseSgmTile, sgmRelBound, sgmTileName, sgmUnsupportedReason } from '../src/kernels/matmul-sgm.js';
import { MatmulSgmInput } from '../src/kernels/matmul-sgm-input.js';
import { rowScaleRef } from '../src/kernels/row-scale.js';
import { makeWeight, Words } from './bench-weight.js';

/** dX shapes: n the reduction (the forward's output width), k dX's width (the forward's input). */
const SHAPES = [
  { name: 'q_proj', m: 2048, n: 4096, k: 2560 },
  { name: 'k/v_proj', m: 2048, n: 1024, k: 2560 },
  { name: 'gate/up', m: 2048, n: 9728, k: 2560 },
  { name: 'o_proj', m: 2048, n: 2560, k: 4096 },
  { name: 'down_proj', m: 2048, n: 2560, k: 9728 },
] as const;

/** dY's row scales by the row-scale rule of issue 11 item 4 (src/kernels/row-scale.ts). */
const rowScales = (dy: Float32Array, m: number, n: number): Float32Array => Float32Array.from(rowScaleRef(dy, m, n));

function writeJson(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  renameSync(tmp, path);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '10' },
      json: { type: 'string' },
      force: { type: 'boolean', default: false },
      robustness: { type: 'boolean', default: false },
      tile: { type: 'string' },
      formats: { type: 'string', default: 'nf4' },
      slices: { type: 'string', default: 'plan' },
      prefetch: { type: 'string', default: 'auto' },
      shapes: { type: 'string' },
    },
  });
  if (values.json && existsSync(values.json) && !values.force) {
    throw new Error(`bench/matmul-sgm-input: ${values.json} exists; pass --force to overwrite it or choose another --json path`);
  }
  const gpu = await Gpu.open({
    robustness: values.robustness,
  });
  console.log(`device: ${gpu.describe()}`);
  const reason = sgmUnsupportedReason(gpu);
  if (reason) throw new Error(`bench/matmul-sgm-input: ${reason}`);
  const reps = Number(values.reps);
  const formats = values.formats.split(',').map((f) => f.trim()) as StoredFormat[];
  const tiles = values.tile?.split(',').map(parseSgmTile);
  const sliceChoices = values.slices.split(',').map((s) => (s.trim() === 'plan' ? 'plan' : Number(s)));
  for (const s of sliceChoices) if (s !== 'plan' && !(Number.isInteger(s) && s >= 1)) throw new Error(`bench/matmul-sgm-input: --slices ${String(s)}: expected plan or a positive integer`);
  const prefetches = values.prefetch.split(',').map((p) => p.trim());
  for (const p of prefetches) if (p !== 'on' && p !== 'off' && p !== 'auto') throw new Error(`bench/matmul-sgm-input: --prefetch ${p}: expected auto, on or off`);
  const shapes = values.shapes ? SHAPES.filter((s) => values.shapes!.split(',').includes(s.name)) : SHAPES;
  const t0 = performance.now();
  const mms = new Map<string, MatmulSgmInput>();
  for (const p of prefetches) mms.set(p, await MatmulSgmInput.create(gpu, { tiles, formats, accumulate: [false], prefetch: p === 'auto' ? 'auto' : p === 'on' }));
  const tileList = [...mms.values()][0].tiles;
  console.log(`compiled ${tileList.length} tiles × ${formats.length} formats × prefetch ${prefetches.join('/')} in ${((performance.now() - t0) / 1e3).toFixed(1)} s: ${tileList.map(sgmTileName).join(', ')}`);

  const command = `node dist/bench/matmul-sgm-input.js ${process.argv.slice(2).join(' ')}`.trim();
  const results: Record<string, unknown>[] = [];
  const header = `${'shape'.padEnd(10)} ${'format'.padEnd(6)} ${'M'.padStart(5)} ${'N'.padStart(6)} ${'K'.padStart(6)}  ${'tile'.padEnd(26)} ${'S'.padStart(2)} ${'pf'.padEnd(3)} ${'ms'.padStart(8)} ${'TFLOP/s'.padStart(8)}  err/bound`;
  const lines: string[] = [];
  let seed = 1;
  let warmed = false;
  for (const shape of shapes) {
    const { m, n, k } = shape;
    const dyv = new Float32Array(m * n);
    const rnd = new Words(seed++);
    for (let i = 0; i < dyv.length; i++) dyv[i] = rnd.signed() * 1e-6;
    const dy = gpu.tensorFrom('dy', [m, n], 'f32', dyv);
    const rowScale = gpu.tensorFrom('rowScale', [m], 'f32', rowScales(dyv, m, n));
    const dx = gpu.tensor('dx', [m, k], 'f32');
    // 64 sampled outputs (row i, column c), the last one in the corner
    const pick = new Words(7);
    const samples = Array.from({ length: 64 }, (_, s) => (s === 0 ? [m - 1, k - 1] : [pick.next() % m, pick.next() % k]) as [number, number]);
    for (const format of formats) {
      const bw = makeWeight(gpu, format, n, k, seed++);
      // W[:, c] of the sampled columns, decoded once: (64, n)
      const cols = samples.map(() => new Float64Array(n));
      for (let j = 0; j < n; j++) {
        const row = bw.row(j);
        samples.forEach(([, c], s) => (cols[s][j] = row[c]));
      }
      const relBound = sgmRelBound(format, n);
      for (const [pf, mm] of mms) {
        const planned = mm.plan(m, n, k);
        for (const tile of mm.tiles) {
          const done = new Set<number>();
          for (const choice of sliceChoices) {
            const plan = mm.plan(m, n, k, { tile, slices: choice === 'plan' ? undefined : choice });
            if (choice === 'plan' && tile !== planned.tile) continue;
            // each (tile, slices) once: forced counts clamp to what the scratch allows
            if (done.has(plan.slices) || (choice !== 'plan' && sliceChoices.includes('plan') && tile === planned.tile && plan.slices === planned.slices)) continue;
            done.add(plan.slices);
            const list: Dispatch[] = mm.input(`${shape.name} ${format}`, { dx, dy, rowScale, w: bw.w }, { tile, slices: plan.slices });
            gpu.fill32(dx, 0x7fc00000);
            submitDispatches(gpu, list);
            const out = await gpu.readF32(dx);
            let rel = 0;
            samples.forEach(([i, c], s) => {
              let ref = 0;
              let mag = 0;
              for (let j = 0; j < n; j++) {
                ref += dyv[i * n + j] * cols[s][j];
                mag += Math.abs(dyv[i * n + j] * cols[s][j]);
              }
              const err = Math.abs(out[i * k + c] - ref) / Math.max(mag, 1e-30);
              rel = Number.isFinite(err) ? Math.max(rel, err) : Infinity;
            });
            const calls = Array.from({ length: 10 }, () => list).flat();
            if (!warmed) {
              // about a second of work so that the clocks have risen before the first timing
              const t = performance.now();
              while (performance.now() - t < 1000) {
                submitDispatches(gpu, calls);
                await gpu.sync();
              }
              warmed = true;
            }
            const seconds = (await timeDispatches(gpu, calls, reps, 3)) / 10;
            const r = {
              shape: shape.name,
              format,
              m,
              n,
              k,
              tile: sgmTileName(tile),
              slices: plan.slices,
              prefetch: pf,
              picked: tile === planned.tile && plan.slices === planned.slices,
              ms: seconds * 1e3,
              tflops: (2 * m * n * k) / seconds / 1e12,
              maxRelErr: rel,
              errOverBound: rel / relBound,
            };
            results.push(r);
            const line =
              `${r.shape.padEnd(10)} ${format.padEnd(6)} ${String(m).padStart(5)} ${String(n).padStart(6)} ${String(k).padStart(6)}  ` +
              `${(r.tile + (r.picked ? ' *' : '')).padEnd(26)} ${String(r.slices).padStart(2)} ${pf.padEnd(3)} ${r.ms.toFixed(3).padStart(8)} ${r.tflops.toFixed(1).padStart(8)}  ${r.errOverBound.toFixed(3)}`;
            lines.push(line);
            console.log(line);
          }
        }
      }
      for (const t of [bw.w.data, bw.w.absmax, bw.w.doubleQuant?.codes, bw.w.doubleQuant?.absmax2]) t?.buffer.destroy();
    }
    for (const t of [dy, rowScale, dx]) t.buffer.destroy();
    // written after every shape, so that a run cut short keeps what it measured
    if (values.json) writeJson(values.json, { device: gpu.describe(), robustness: gpu.robustness, date: new Date().toISOString(), command, reps, callsPerPass: 10, results });
  }
  console.log('\n' + header + '\n' + '-'.repeat(header.length) + '\n' + lines.join('\n'));
  if (values.json) console.log(`wrote ${values.json}`);
  for (const mm of mms.values()) mm.destroy();
  gpu.destroy();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
