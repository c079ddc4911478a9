/**
 * Matmul backward benchmark.
 *
 *   npx tsc -p . && node dist/bench/matmul-backward.js [--small] [--reps N] [--json FILE] [--formats nf4,bf16,nf4dq,f32] [--all]
 *
 * Times MatmulBackward (timestamp queries through timeDispatches, median of --reps) at Qwen3-4B's
 * shapes with M = 2048 tokens:
 *   base   dX (M, K) = dY (M, Nout) · W for q (K 2560 → Nout 4096), k/v (2560 → 1024), gate/up
 *          (2560 → 9728) and down (9728 → 2560), W in each format asked, `input` (one pass);
 *   lora   at R = 32 (f32): dU (M, R) = s·dY·B (`inputSplit`), dX += dU·A (`input`, reduction R),
 *          dB (Nout, R) = s·dYᵀ·U and dA (R, K) = dUᵀ·X (`weightGrad`);
 *   lm_head dX (Tc = 1024, D = 2560) = dlogits (Tc, V = 151936) · E (V, D) bf16, `input` and `inputSplit`.
 * Each line is the planned tile and split (`*`); --all also times every compiled tile, one pass
 * and split as planned for it (to calibrate the plan's cost model). Prints ms, TFLOP/s
 * (2·rows·cols·reduction / time), GB/s (operands read once + output written, / time: the LoRA
 * shapes are bandwidth-bound) and the largest error at 64 sampled outputs against a float64 dot
 * product, relative to Σ|terms|. `--small` runs toy shapes in seconds (lavapipe smoke test).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { submitDispatches, timeDispatches, type Dispatch } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import { MatmulBackward, type BackwardPlan } from '../src/kernels/matmul-backward.js';
import { tileName, type LinearWeight, type MatmulTile, type StoredFormat } from '../src/kernels/matmul.js';
import { dynamicMap, NF4_CODEBOOK } from '../src/kernels/nf4.js';
import type { Tensor } from '../src/kernels/tensor.js';
import { Words } from './bench-weight.js';

/** One benchmarked call: out (rows, cols) = Σ over `red` terms. */
interface Case {
  readonly name: string;
  readonly kind: 'input' | 'inputSplit' | 'weightGrad';
  /** input: M tokens, Nout, K of W; weightGrad: M tokens, Nout, K of dW. */
  readonly m: number;
  readonly nOut: number;
  readonly k: number;
  readonly format: StoredFormat;
}

const R = 32;
const PROJ = [
  { name: 'q_proj', k: 2560, n: 4096 },
  { name: 'k/v_proj', k: 2560, n: 1024 },
  { name: 'gate/up', k: 2560, n: 9728 },
  { name: 'down_proj', k: 9728, n: 2560 },
] as const;
const PROJ_SMALL = [
  { name: 'q_proj', k: 256, n: 512 },
  { name: 'down_proj', k: 384, n: 96 },
] as const;

function cases(small: boolean, formats: readonly StoredFormat[]): Case[] {
  const m = small ? 64 : 2048;
  const r = small ? 8 : R;
  const list: Case[] = [];
  for (const p of small ? PROJ_SMALL : PROJ) {
    for (const format of formats) list.push({ name: `${p.name} dX`, kind: 'input', m, nOut: p.n, k: p.k, format });
  }
  for (const p of small ? PROJ_SMALL : PROJ) {
    list.push({ name: `${p.name} dU=s·dY·B`, kind: 'inputSplit', m, nOut: p.n, k: r, format: 'f32' });
    list.push({ name: `${p.name} dB=s·dYᵀU`, kind: 'weightGrad', m, nOut: p.n, k: r, format: 'f32' });
  }
  for (const k of small ? [256, 384] : [2560, 9728]) {
    list.push({ name: `K=${k} dX+=dU·A`, kind: 'input', m, nOut: r, k, format: 'f32' });
    list.push({ name: `K=${k} dA=dUᵀX`, kind: 'weightGrad', m, nOut: r, k, format: 'f32' });
  }
  const tc = small ? 16 : 1024;
  const [v, d] = small ? [3000, 256] : [151936, 2560];
  list.push({ name: 'lm_head dX', kind: 'input', m: tc, nOut: v, k: d, format: 'bf16' });
  list.push({ name: 'lm_head dX', kind: 'inputSplit', m: tc, nOut: v, k: d, format: 'bf16' });
  return list;
}

function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const rnd = new Words(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rnd.signed() * scale;
  return v;
}

/** A random bf16 in ±[2^-8, 2^-4): sign, exponent 119..122, random mantissa. */
function bf16Bits(r: number): number {
  return ((r & 0x8000) | ((119 + ((r >>> 7) & 3)) << 7) | (r & 0x7f)) & 0xffff;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);
function bf16Value(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** A random (n, k) weight of `format` on the GPU, and element e of its dense values. */
function makeWeight(gpu: Gpu, format: StoredFormat, n: number, k: number, seed: number): { w: LinearWeight; at(e: number): number } {
  const rnd = new Words(seed);
  const shape = [n, k];
  if (format === 'f32') {
    const v = randomF32(n * k, seed, 0.05);
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w f32', shape, 'f32', v) }, at: (e) => v[e] };
  }
  if (format === 'bf16') {
    const words = new Uint32Array(Math.ceil((n * k) / 2));
    for (let i = 0; i < words.length; i++) words[i] = (bf16Bits(rnd.next()) | (bf16Bits(rnd.next()) << 16)) >>> 0;
    const halves = new Uint16Array(words.buffer);
    return { w: { format, nOut: n, k, data: gpu.tensorFrom('w bf16', shape, 'bf16x2', words) }, at: (e) => bf16Value(halves[e]) };
  }
  const blocks = (n * k) / 64;
  const packed = new Uint32Array((n * k) / 8);
  for (let i = 0; i < packed.length; i++) packed[i] = rnd.next();
  const bytes = new Uint8Array(packed.buffer);
  const data = gpu.tensorFrom('w nf4', shape, 'nf4x8', packed);
  const absmax = new Float32Array(blocks);
  for (let i = 0; i < blocks; i++) absmax[i] = 0.02 + (rnd.next() / 4294967296) * 0.04;
  let scale = (b: number) => absmax[b];
  let w: LinearWeight = { format: 'nf4', nOut: n, k, data, absmax: gpu.tensorFrom('absmax', [blocks], 'f32', absmax) };
  if (format === 'nf4dq') {
    const codes = new Uint8Array(Math.ceil(blocks / 4) * 4);
    for (let i = 0; i < blocks; i++) codes[i] = rnd.next() & 0xff;
    const absmax2 = new Float32Array(Math.ceil(blocks / 256)).fill(0.02);
    const map = dynamicMap();
    scale = (b) => Math.fround(Math.fround(map[codes[b]] * absmax2[b >> 8]) + 0.03);
    w.absmax?.buffer.destroy();
    w = {
      format: 'nf4',
      nOut: n,
      k,
      data,
      doubleQuant: { codes: gpu.tensorFrom('codes', [blocks], 'u8x4', codes), absmax2: gpu.tensorFrom('absmax2', [absmax2.length], 'f32', absmax2), offset: 0.03 },
    };
  }
  return { w, at: (e) => NF4_CODEBOOK[(e & 1) === 0 ? bytes[e >> 1] >> 4 : bytes[e >> 1] & 15] * scale(e >> 6) };
}

/** Largest |out − ref| / Σ|terms| over 64 sampled outputs; term(i, j, l) is one product of the sum. */
function sampledError(out: Float32Array, rows: number, cols: number, red: number, scale: number, term: (i: number, j: number, l: number) => number): number {
  const rnd = new Words(7);
  let worst = 0;
  for (let s = 0; s < 64; s++) {
    const i = s === 0 ? rows - 1 : rnd.next() % rows;
    const j = s === 0 ? cols - 1 : rnd.next() % cols;
    let ref = 0;
    let mag = 0;
    for (let l = 0; l < red; l++) {
      const t = term(i, j, l);
      ref += t;
      mag += Math.abs(t);
    }
    const err = Math.abs(out[i * cols + j] - scale * ref) / Math.max(Math.abs(scale) * mag, 1e-30);
    worst = Number.isFinite(err) ? Math.max(worst, err) : Infinity;
  }
  return worst;
}

interface Result {
  name: string;
  kind: string;
  format: StoredFormat;
  rows: number;
  cols: number;
  reduction: number;
  tile: string;
  slices: number;
  planned: boolean;
  ms: number;
  tflops: number;
  gbs: number;
  maxRelErr: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: 'boolean', default: false },
      reps: { type: 'string', default: '20' },
      json: { type: 'string' },
      formats: { type: 'string', default: 'nf4,bf16' },
      all: { type: 'boolean', default: false },
    },
  });
  const gpu = await Gpu.open();
  console.log(`device: ${gpu.describe()}`);
  const reps = Number(values.reps);
  const formats = values.formats.split(',').map((f) => f.trim()) as StoredFormat[];
  const mb = await MatmulBackward.create(gpu, { formats: [...new Set<StoredFormat>([...formats, 'f32', 'bf16'])] });
  const results: Result[] = [];
  const header =
    `${'case'.padEnd(20)} ${'call'.padEnd(10)} ${'format'.padEnd(6)} ${'rows'.padStart(5)} ${'cols'.padStart(5)} ${'reduce'.padStart(7)}  ` +
    `${'tile × slices'.padEnd(20)} ${'ms'.padStart(8)} ${'TFLOP/s'.padStart(8)} ${'GB/s'.padStart(7)}  max rel err`;
  console.log(header);
  console.log('-'.repeat(header.length));
  let seed = 1;
  for (const c of cases(values.small, formats)) {
    const weightGrad = c.kind === 'weightGrad';
    // rows × cols of the output, summed over `red` terms
    const [rows, cols, red] = weightGrad ? [c.nOut, c.k, c.m] : [c.m, c.k, c.nOut];
    const dyv = randomF32(c.m * c.nOut, seed++);
    const dy = gpu.tensorFrom('dy', [c.m, c.nOut], 'f32', dyv);
    const out = gpu.tensor('out', [rows, cols], 'f32');
    let xv: Float32Array | undefined;
    let x: Tensor | undefined;
    let weight: ReturnType<typeof makeWeight> | undefined;
    if (weightGrad) {
      xv = randomF32(c.m * c.k, seed++);
      x = gpu.tensorFrom('x', [c.m, c.k], 'f32', xv);
    } else {
      weight = makeWeight(gpu, c.format, c.nOut, c.k, seed++);
    }
    const scale = c.kind === 'input' ? 1 : 2;
    const bind = (opts: { tile?: MatmulTile; slices?: number }): Dispatch[] => {
      if (weightGrad) return mb.weightGrad(c.name, { dw: out, dy, x: x! }, { ...opts, scale });
      if (c.kind === 'input' && (opts.slices ?? 1) === 1) return [mb.input(c.name, { dx: out, dy, w: weight!.w }, { tile: opts.tile, scale })];
      return mb.inputSplit(c.name, { dx: out, dy, w: weight!.w }, { ...opts, scale });
    };
    const planOf = (tile?: MatmulTile): BackwardPlan =>
      weightGrad ? mb.planWeightGrad(c.m, c.nOut, c.k, { tile }) : mb.planInput(c.m, c.nOut, c.k, c.kind === 'inputSplit', { tile });
    const planned = planOf();
    const runs: { tile: MatmulTile; slices: number }[] = [{ tile: planned.tile, slices: planned.slices }];
    if (values.all) {
      for (const tile of weightGrad ? mb.weightGradTiles : mb.inputTiles) {
        for (const slices of new Set([1, planOf(tile).slices])) {
          if (tile !== planned.tile || slices !== planned.slices) runs.push({ tile, slices });
        }
      }
    }
    for (const run of runs) {
      const list = bind(run);
      submitDispatches(gpu, list);
      const got = await gpu.readF32(out);
      const term = weightGrad
        ? (i: number, j: number, l: number) => dyv[l * c.nOut + i] * xv![l * c.k + j]
        : (i: number, j: number, l: number) => dyv[i * c.nOut + l] * weight!.at(l * c.k + j);
      const maxRelErr = sampledError(got, rows, cols, red, scale, term);
      const seconds = await timeDispatches(gpu, list, reps);
      const weightBytes = weightGrad ? 4 * c.m * c.k : (c.nOut * c.k * { f32: 32, bf16: 16, nf4: 4.5, nf4dq: 4.125 }[c.format]) / 8;
      const bytes = 4 * c.m * c.nOut + weightBytes + 4 * rows * cols;
      const r: Result = {
        name: c.name,
        kind: c.kind,
        format: c.format,
        rows,
        cols,
        reduction: red,
        tile: tileName(run.tile),
        slices: run.slices,
        planned: run === runs[0],
        ms: seconds * 1e3,
        tflops: (2 * rows * cols * red) / seconds / 1e12,
        gbs: bytes / seconds / 1e9,
        maxRelErr,
      };
      results.push(r);
      console.log(
        `${r.name.padEnd(20)} ${r.kind.padEnd(10)} ${r.format.padEnd(6)} ${String(rows).padStart(5)} ${String(cols).padStart(5)} ${String(red).padStart(7)}  ` +
          `${`${r.tile} × ${r.slices}${r.planned ? ' *' : ''}`.padEnd(20)} ${r.ms.toFixed(3).padStart(8)} ${r.tflops.toPrecision(3).padStart(8)} ` +
          `${r.gbs.toPrecision(4).padStart(7)}  ${r.maxRelErr.toExponential(2)}`,
      );
    }
    for (const t of [dy, out, x, weight?.w.data, weight?.w.absmax, weight?.w.doubleQuant?.codes, weight?.w.doubleQuant?.absmax2]) t?.buffer.destroy();
  }
  console.log(`scratch: ${(mb.scratchBytes / 2 ** 20).toFixed(0)} MiB`);
  if (values.json) {
    writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), reps, results }, null, 2));
    console.log(`wrote ${values.json}`);
  }
  mb.destroy();
  gpu.destroy();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
