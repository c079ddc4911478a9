/**
 * Subgroup-matrix (tensor-core) dequant-matmul benchmark.
 *
 *   npx tsc -p . && node dist/bench/matmul-sgm.js [--small] [--reps N] [--json FILE] [--force] [--formats nf4,bf16,f32]
 *       [--tile 256x128x32/8x1sg/2x8f,...] [--staging unrolled,loop] [--prefetch on,off] [--epilogue plain,lora] [--rank R] [--robustness]
 *
 * Times MatmulSgm.forward (X staged as f16(X[m]·rowScale[m])) at Qwen3-4B's projection shapes with
 * M = 2048 tokens — K→N 2560→4096 (q_proj), 2560→1024 (k/v_proj), 2560→9728 (gate/up), 4096→2560
 * (o_proj), 9728→2560 (down_proj) — for every compiled tile, staging (default unrolled) and
 * epilogue (`*` marks the tile pickSgmTile chooses): `plain` writes Y; `lora` adds the LoRA term of
 * rank --rank (default 32) and, at o_proj and down_proj, accumulates into Y (the residual add), as
 * the training step calls them. The RowScale dispatch that makes X's row scales is timed on its own
 * (`rowScale ms`; once per X: q, k and v share theirs) and TFLOP/s are given without and with it.
 * X is random in ±1 with an outlier of 1e5 in every 64th row and rows of 1e-10 next to them (f16
 * alone would overflow and underflow there). After a warm-up of about a second of dispatches, each
 * timing is the median of --reps (default 15) timestamp-query passes of 10 dispatches each. Prints
 * ms, TFLOP/s (2·M·N·K / time; the LoRA term's 2·M·N·R not counted) and, for `plain`, the largest
 * error at 64 sampled outputs against a float64 dot product, relative to Σ|x·w| and as a multiple
 * of sgmRelBound. --json refuses to overwrite an existing file unless --force.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { submitDispatches, timeDispatches } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import type { StoredFormat } from '../src/kernels/matmul.js';
import { MatmulSgm, parseSgmTile, SGM_FORWARD_PREFETCH, type SgmStaging, sgmRelBound, sgmTileName, sgmUnsupportedReason } from '../src/kernels/matmul-sgm.js';
import { RowScale } from '../src/kernels/row-scale.js';
import { makeWeight, sampledError, Words } from './bench-weight.js';

const FULL = [
  { name: 'q_proj', m: 2048, k: 2560, n: 4096 },
  { name: 'k/v_proj', m: 2048, k: 2560, n: 1024 },
  { name: 'gate/up', m: 2048, k: 2560, n: 9728 },
  { name: 'o_proj', m: 2048, k: 4096, n: 2560 },
  { name: 'down_proj', m: 2048, k: 9728, n: 2560 },
] as const;
const SMALL = [
  { name: 'small', m: 100, k: 128, n: 200 },
  { name: 'square', m: 512, k: 512, n: 512 },
] as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: 'boolean', default: false },
      reps: { type: 'string', default: '15' },
      json: { type: 'string' },
      force: { type: 'boolean', default: false },
      robustness: { type: 'boolean', default: false },
      tile: { type: 'string' },
      formats: { type: 'string', default: 'nf4' },
      staging: { type: 'string', default: 'unrolled' },
      prefetch: { type: 'string', default: SGM_FORWARD_PREFETCH ? 'on' : 'off' },
      epilogue: { type: 'string', default: 'plain,lora' },
      rank: { type: 'string', default: '32' },
    },
  });
  if (values.json && existsSync(values.json) && !values.force) {
    throw new Error(`bench/matmul-sgm: ${values.json} exists; pass --force to overwrite it or choose another --json path`);
  }
  const gpu = await Gpu.open({
    robustness: values.robustness,
  });
  console.log(`device: ${gpu.describe()}`);
  const reason = sgmUnsupportedReason(gpu);
  if (reason) throw new Error(`bench/matmul-sgm: ${reason}`);
  const reps = Number(values.reps);
  const formats = values.formats.split(',').map((f) => f.trim()) as StoredFormat[];
  const tiles = values.tile?.split(',').map(parseSgmTile);
  const stagings = values.staging.split(',').map((s) => s.trim());
  for (const s of stagings) if (s !== 'unrolled' && s !== 'loop') throw new Error(`bench/matmul-sgm: --staging ${s}: expected unrolled or loop`);
  const prefetches = values.prefetch.split(',').map((s) => s.trim());
  for (const p of prefetches) if (p !== 'on' && p !== 'off') throw new Error(`bench/matmul-sgm: --prefetch ${p}: expected on or off`);
  const epilogues = values.epilogue.split(',').map((s) => s.trim());
  for (const e of epilogues) if (e !== 'plain' && e !== 'lora') throw new Error(`bench/matmul-sgm: --epilogue ${e}: expected plain or lora`);
  const rank = Number(values.rank);
  const t0 = performance.now();
  const mms = new Map<string, MatmulSgm>();
  const lora = [...new Set(epilogues.map((e) => e === 'lora'))];
  for (const s of stagings as SgmStaging[]) {
    // the loop staging never prefetches
    for (const p of s === 'loop' ? ['off'] : prefetches) {
      mms.set(prefetches.length > 1 && s === 'unrolled' ? `${s}/pf-${p}` : s, await MatmulSgm.create(gpu, { tiles, formats, accumulate: [false, true], lora, staging: s, prefetch: p === 'on' }));
    }
  }
  const rowScaleKernel = await RowScale.create(gpu);
  const tileList = [...mms.values()][0].tiles;
  const variants = [...mms].flatMap(([s, mm]) => mm.tiles.map((t) => [s, mm, t] as const));
  console.log(`compiled ${tileList.length} tiles × ${formats.length} formats × ${stagings.join('/')} staging (prefetch ${prefetches.join('/')}) in ${((performance.now() - t0) / 1e3).toFixed(1)} s: ${tileList.map(sgmTileName).join(', ')}`);

  const results: Record<string, unknown>[] = [];
  const header =
    `${'shape'.padEnd(10)} ${'format'.padEnd(6)} ${'M'.padStart(5)} ${'K'.padStart(6)} ${'N'.padStart(6)}  ${'tile'.padEnd(26)} ${'staging'.padEnd(15)} ${'epilogue'.padEnd(12)} ` +
    `${'ms'.padStart(8)} ${'TFLOP/s'.padStart(8)} ${'rowScale ms'.padStart(11)} ${'w/ rowScale'.padStart(11)}  err/bound`;
  let seed = 1;
  let warmed = false;
  const lines: string[] = [];
  for (const shape of values.small ? SMALL : FULL) {
    const { m, k, n } = shape;
    const xv = new Float32Array(m * k);
    const rnd = new Words(seed++);
    for (let i = 0; i < xv.length; i++) xv[i] = rnd.unit() * 2 - 1;
    for (let i = 0; i < m; i += 64) {
      xv[i * k + (rnd.next() % k)] = 1e5;
      if (i + 1 < m) for (let c = 0; c < k; c++) xv[(i + 1) * k + c] *= 1e-10;
    }
    const x = gpu.tensorFrom('x', [m, k], 'f32', xv);
    const y = gpu.tensor('y', [m, n], 'f32');
    const rowScale = gpu.tensor('rowScale', [m], 'f32');
    const rsDispatch = rowScaleKernel.forward(`${shape.name} rowScale`, { rowScale, x }, k);
    submitDispatches(gpu, [rsDispatch]);
    const small = (count: number) => Float32Array.from({ length: count }, () => (rnd.unit() * 2 - 1) * 0.05);
    const u = gpu.tensorFrom('u', [m, rank], 'f32', small(m * rank));
    const b = gpu.tensorFrom('lora_b', [n, rank], 'f32', small(n * rank));
    const residual = shape.name === 'o_proj' || shape.name === 'down_proj';
    let rowScaleSeconds = -1;
    for (const format of formats) {
      const bw = makeWeight(gpu, format, n, k, seed++);
      for (const [staging, mm, tile, epilogue] of variants.flatMap((v) => epilogues.map((e) => [...v, e] as const))) {
        const picked = mm.pickTile(m, n);
        const withLora = epilogue === 'lora';
        const accumulate = withLora && residual;
        const d = mm.forward(`${shape.name} ${format}`, { y, x, rowScale, w: bw.w, tile, accumulate, lora: withLora ? { u, b, scale: 2 } : undefined });
        gpu.fill32(y, 0x7fc00000);
        let rel = NaN;
        if (!withLora) {
          submitDispatches(gpu, [d]);
          rel = await sampledError(gpu, y, xv, bw, m, n, k);
        } else {
          gpu.fill32(y, 0);
        }
        const list = Array.from({ length: 10 }, () => d);
        if (!warmed) {
          // about a second of work so that the clocks have risen before the first timing
          const t = performance.now();
          while (performance.now() - t < 1000) {
            submitDispatches(gpu, list);
            await gpu.sync();
          }
          warmed = true;
        }
        if (rowScaleSeconds < 0) rowScaleSeconds = (await timeDispatches(gpu, Array.from({ length: 10 }, () => rsDispatch), reps, 3)) / 10;
        const seconds = (await timeDispatches(gpu, list, reps, 3)) / 10;
        const epilogueName = withLora ? `lora${rank}${accumulate ? '+acc' : ''}` : 'plain';
        const r = {
          shape: shape.name,
          format,
          m,
          n,
          k,
          tile: sgmTileName(tile),
          staging,
          epilogue: epilogueName,
          picked: tile === picked,
          ms: seconds * 1e3,
          tflops: (2 * m * n * k) / seconds / 1e12,
          rowScaleMs: rowScaleSeconds * 1e3,
          tflopsWithRowScale: (2 * m * n * k) / (seconds + rowScaleSeconds) / 1e12,
          maxRelErr: withLora ? null : rel,
          errOverBound: withLora ? null : rel / sgmRelBound(format, k),
        };
        results.push(r);
        const line =
          `${r.shape.padEnd(10)} ${format.padEnd(6)} ${String(m).padStart(5)} ${String(k).padStart(6)} ${String(n).padStart(6)}  ` +
          `${(r.tile + (r.picked ? ' *' : '')).padEnd(26)} ${staging.padEnd(15)} ${epilogueName.padEnd(12)} ${r.ms.toFixed(3).padStart(8)} ${r.tflops.toFixed(1).padStart(8)} ` +
          `${r.rowScaleMs.toFixed(3).padStart(11)} ${r.tflopsWithRowScale.toFixed(1).padStart(11)}  ${r.errOverBound === null ? '-' : r.errOverBound.toFixed(3)}`;
        lines.push(line);
        console.log(line);
      }
      for (const t of [bw.w.data, bw.w.absmax]) t?.buffer.destroy();
    }
    for (const t of [x, y, rowScale, u, b]) t.buffer.destroy();
  }
  console.log('\n' + header + '\n' + '-'.repeat(header.length) + '\n' + lines.join('\n'));
  if (values.json) {
    const command = `node dist/bench/matmul-sgm.js ${process.argv.slice(2).join(' ')}`.trim();
    const tmp = `${values.json}.tmp`;
    writeFileSync(tmp, JSON.stringify({ device: gpu.describe(), robustness: gpu.robustness, date: new Date().toISOString(), command, reps, dispatchesPerPass: 10, results }, null, 2) + '\n');
    renameSync(tmp, values.json);
    console.log(`wrote ${values.json}`);
  }
  gpu.destroy();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
