/**
 * The LoRA down-projection (LoraDown) and the attention head scales (HeadScale) at Qwen3-4B's
 * training shapes, timed alone — the two f32 passes changed on 2026-12-03 without a GPU-host
 * timing (lora_A was 95 ms and the head scales 16 ms of a 1.0 s micro-batch then,
 * bench/results/h200-2026-12-03-s5-profile.json):
 *
 *   npx tsc -p . && node dist/bench/lora-down.js [--tokens 2048] [--r 32] [--reps 20] [--dropout 0.05] [--json FILE]
 *
 * LoraDown: q+k+v (K 2560, three projections), gate+up (2560, two), o (4096), down (9728), each
 * without and with LoRA dropout; HeadScale: q (8 groups of 4 heads × 128), k, v at B4×T512 (tokens
 * / 512 batch rows). Prints ms (median of --reps timestamp-query passes of 10 dispatches after a
 * warm-up), TFLOP/s (LoraDown: 2·M·K·R per projection) or GB/s (HeadScale: bytes of x read), and
 * the largest error of 64 sampled outputs of the first projection's U against a float64 dot product
 * of the (dropped) input, relative to Σ|x·a|.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { timeDispatches, submitDispatches, type Dispatch } from '../src/kernels/dispatch.js';
import { dropoutRef } from '../src/kernels/dropout.js';
import { Gpu } from '../src/kernels/gpu.js';
import { HeadScale } from '../src/kernels/head-scale.js';
import { LoraDown } from '../src/kernels/lora-down.js';
import { Rng } from '../tests/helpers/random.js';
import { sampledError } from './bench-weight.js';

interface DownCase {
  readonly name: string;
  readonly k: number;
  readonly groups: number;
}

const DOWN: readonly DownCase[] = [
  { name: 'q+k+v', k: 2560, groups: 3 },
  { name: 'gate+up', k: 2560, groups: 2 },
  { name: 'o', k: 4096, groups: 1 },
  { name: 'down', k: 9728, groups: 1 },
];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      tokens: { type: 'string', default: '2048' },
      r: { type: 'string', default: '32' },
      reps: { type: 'string', default: '20' },
      dropout: { type: 'string', default: '0.05' },
      json: { type: 'string' },
    },
  });
  const M = Number(values.tokens);
  const R = Number(values.r);
  const reps = Number(values.reps);
  const p = Number(values.dropout);
  if (!(M >= 512 && M % 512 === 0)) throw new Error(`--tokens ${values.tokens}: a multiple of 512 (batch rows of 512 tokens for the head scales)`);
  const gpu = await Gpu.open();
  console.log(`device: ${gpu.describe()}`);
  const down = await LoraDown.create(gpu);
  const heads = await HeadScale.create(gpu);
  const rng = new Rng(M + R);
  const results: Record<string, unknown>[] = [];
  const time = async (list: Dispatch[]): Promise<number> => {
    await timeDispatches(gpu, list, 3, 3); // warm-up
    return (await timeDispatches(gpu, list, reps, 3)) / list.length;
  };
  const SEED = 12345;
  const seed = gpu.tensorFrom('seed', [1], 'u32', new Uint32Array([SEED]));
  for (const c of DOWN) {
    const xv = rng.f32(M * c.k);
    const x = gpu.tensorFrom('x', [M, c.k], 'f32', xv);
    const av = Array.from({ length: c.groups }, () => rng.f32(R * c.k, 0.05));
    const a = av.map((v, g) => gpu.tensorFrom(`a${g}`, [R, c.k], 'f32', v));
    const u = av.map((_, g) => gpu.tensor(`u${g}`, [M, R], 'f32'));
    for (const drop of [0, p]) {
      const salts = [1, 2, 3].slice(0, c.groups);
      const d = down.forward(`lora down ${c.name}`, { u, x, a, seed }, { dropout: drop > 0 ? { p: drop, salts } : undefined });
      gpu.fill32(u[0], 0x7fc00000);
      submitDispatches(gpu, [d]);
      const xd = drop > 0 ? dropoutRef(xv, drop, SEED, salts[0]) : xv;
      const err = await sampledError(gpu, u[0], xd, { row: (j) => Float64Array.from(av[0].subarray(j * c.k, (j + 1) * c.k)) }, M, R, c.k);
      const sec = await time(Array<Dispatch>(10).fill(d));
      const flops = 2 * M * c.k * R * c.groups;
      const r = { kernel: 'lora down', shape: c.name, m: M, k: c.k, r: R, groups: c.groups, dropout: drop, ms: sec * 1e3, tflops: flops / sec / 1e12, relErr: err };
      results.push(r);
      console.log(`lora down ${c.name.padEnd(8)} M=${M} K=${c.k} R=${R} ×${c.groups} dropout ${drop}: ${r.ms.toFixed(3)} ms, ${r.tflops.toPrecision(3)} TFLOP/s, err ${err.toExponential(2)} of Σ|x·a|`);
    }
    for (const t of [x, ...a, ...u]) t.buffer.destroy();
  }
  const B = M / 512;
  for (const [name, groups, width] of [['q', 8, 512], ['k', 8, 128], ['v', 8, 128]] as const) {
    const x = gpu.tensorFrom('x', [M, groups * width], 'f32', rng.f32(M * groups * width));
    const scale = gpu.tensor('scale', [B * groups], 'f32');
    const d = heads.forward(`head scale ${name}`, { scale, x }, { B, T: 512, heads: groups, Dh: width });
    const sec = await time(Array<Dispatch>(10).fill(d));
    const bytes = M * groups * width * 4;
    const r = { kernel: 'head scale', shape: name, B, T: 512, groups, width, ms: sec * 1e3, gbps: bytes / sec / 1e9 };
    results.push(r);
    console.log(`head scale ${name}: B=${B} T=512 ${groups} groups of ${width}: ${r.ms.toFixed(3)} ms, ${r.gbps.toFixed(0)} GB/s`);
    x.buffer.destroy();
    scale.buffer.destroy();
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), command: process.argv.slice(1).join(' '), results }, null, 1));
}

await main();
