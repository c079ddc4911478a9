/**
 * Dequant-matmul benchmark.
 *
 *   npx tsc -p . && node dist/bench/matmul.js [--small] [--reps N] [--json FILE] [--formats nf4,bf16,nf4dq,f32]
 *       [--tile 128x128x8,64x128x8/8x8,64x64x16] [--no-subgroup-matrix] [--robustness]
 *
 * Times Matmul.forward at Qwen3-4B's projection shapes with M = 2048 tokens — K→Nout 2560→4096
 * (q_proj), 2560→1024 (k/v_proj), 2560→9728 (gate/up_proj), 9728→2560 (down_proj) — in each
 * weight format asked (default nf4 and bf16), plus the bf16 lm_head 2560→151936 at M = 256 (one
 * logits chunk) and an f32 LoRA A (2560→32). Every compiled tile is timed (`*` marks the one
 * `pickTile` chooses) with timestamp queries (timeDispatches; the better of two medians of --reps,
 * as a whole run now and then comes out slow). Prints ms and TFLOP/s (2·M·N·K / time) and the
 * largest error at 64 sampled outputs against a float64 dot product, relative to Σ_k |x_k·w_k|.
 * Weights are random codes / bf16 values made directly (no quantiser in the loop).
 * `--small` runs tiny shapes in seconds (lavapipe smoke test). `--no-subgroup-matrix` opens the
 * device without chromium-experimental-subgroup-matrix (it switches Dawn to the Vulkan memory
 * model); `--robustness` turns Dawn's bounds clamping on (off by default: src/kernels/gpu.ts gpuToggles), to measure its cost.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { submitDispatches, timeDispatches } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import { Matmul, MATMUL_TILES, parseTile, tileName, type MatmulTile, type StoredFormat } from '../src/kernels/matmul.js';
import { makeWeight, sampledError, Words } from './bench-weight.js';

interface Shape {
  readonly name: string;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  /** Formats this shape runs in (lm_head: bf16 only). */
  readonly only?: StoredFormat;
}

const FULL: readonly Shape[] = [
  { name: 'q_proj', m: 2048, k: 2560, n: 4096 },
  { name: 'k/v_proj', m: 2048, k: 2560, n: 1024 },
  { name: 'gate/up', m: 2048, k: 2560, n: 9728 },
  { name: 'down_proj', m: 2048, k: 9728, n: 2560 },
  { name: 'lm_head', m: 256, k: 2560, n: 151936, only: 'bf16' },
  { name: 'lora_A', m: 2048, k: 2560, n: 32, only: 'f32' },
];
const SMALL: readonly Shape[] = [
  { name: 'q_proj', m: 64, k: 256, n: 512 },
  { name: 'k/v_proj', m: 37, k: 256, n: 128 },
  { name: 'down_proj', m: 64, k: 384, n: 96 },
  { name: 'lm_head', m: 16, k: 256, n: 1000, only: 'bf16' },
  { name: 'lora_A', m: 64, k: 256, n: 8, only: 'f32' },
];

interface Result {
  shape: string;
  format: StoredFormat;
  m: number;
  n: number;
  k: number;
  tile: string;
  picked: boolean;
  ms: number;
  tflops: number;
  maxRelErr: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: 'boolean', default: false },
      reps: { type: 'string', default: '20' },
      json: { type: 'string' },
      'no-subgroup-matrix': { type: 'boolean', default: false },
      robustness: { type: 'boolean', default: false },
      tile: { type: 'string' },
      formats: { type: 'string', default: 'nf4,bf16' },
    },
  });
  const gpu = await Gpu.open({
    disable: values['no-subgroup-matrix'] ? ['chromium-experimental-subgroup-matrix'] : [],
    // Dawn's bounds clamping of every buffer and workgroup-array access, off: to measure its cost
    robustness: values.robustness,
  });
  console.log(`device: ${gpu.describe()}`);
  const reps = Number(values.reps);
  const formats = values.formats.split(',').map((f) => f.trim()) as StoredFormat[];
  const tiles: MatmulTile[] | undefined = values.tile?.split(',').map(parseTile);
  const matmul = await Matmul.create(gpu, { tiles, formats: [...new Set([...formats, 'bf16', 'f32'] as const)] });
  console.log(`tiles: ${matmul.tiles.map(tileName).join(', ')} (large default ${tileName(MATMUL_TILES.large)})`);

  const results: Result[] = [];
  const header = `${'shape'.padEnd(10)} ${'format'.padEnd(6)} ${'M'.padStart(5)} ${'K'.padStart(6)} ${'N'.padStart(7)}  ${'tile'.padEnd(17)} ${'ms'.padStart(9)} ${'TFLOP/s'.padStart(8)}  max rel err`;
  console.log(header);
  console.log('-'.repeat(header.length));
  let seed = 1;
  for (const shape of values.small ? SMALL : FULL) {
    const { m, k, n } = shape;
    const xv = new Float32Array(m * k);
    const rnd = new Words(seed++);
    for (let i = 0; i < xv.length; i++) xv[i] = (rnd.next() / 4294967296) * 2 - 1;
    const x = gpu.tensorFrom('x', [m, k], 'f32', xv);
    const y = gpu.tensor('y', [m, n], 'f32');
    for (const format of shape.only ? [shape.only] : formats) {
      const bw = makeWeight(gpu, format, n, k, seed++);
      const picked = matmul.pickTile(m, n);
      for (const tile of matmul.tiles) {
        const d = matmul.forward(`${shape.name} ${format}`, { y, x, w: bw.w, tile });
        submitDispatches(gpu, [d]);
        const maxRelErr = await sampledError(gpu, y, xv, bw, m, n, k);
        // the better of two medians: a run now and then comes out slow as a whole (clocks, paging)
        const seconds = Math.min(await timeDispatches(gpu, [d], reps, 5), await timeDispatches(gpu, [d], reps, 2));
        const r: Result = {
          shape: shape.name,
          format,
          m,
          n,
          k,
          tile: tileName(tile),
          picked: tile === picked,
          ms: seconds * 1e3,
          tflops: (2 * m * n * k) / seconds / 1e12,
          maxRelErr,
        };
        results.push(r);
        console.log(
          `${r.shape.padEnd(10)} ${format.padEnd(6)} ${String(m).padStart(5)} ${String(k).padStart(6)} ${String(n).padStart(7)}  ` +
            `${(r.tile + (r.picked ? ' *' : '')).padEnd(17)} ${r.ms.toFixed(3).padStart(9)} ${r.tflops.toFixed(2).padStart(8)}  ${r.maxRelErr.toExponential(2)}`,
        );
      }
      for (const t of [bw.w.data, bw.w.absmax, bw.w.doubleQuant?.codes, bw.w.doubleQuant?.absmax2]) t?.buffer.destroy();
    }
    x.buffer.destroy();
    y.buffer.destroy();
  }
  if (values.json) {
    writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), robustness: gpu.robustness, date: new Date().toISOString(), reps, results }, null, 2));
    console.log(`wrote ${values.json}`);
  }
  gpu.destroy();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
