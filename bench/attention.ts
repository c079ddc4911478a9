/**
 * Flash attention forward benchmark.
 *
 *   npx tsc -p . && node dist/bench/attention.js [--small] [--json FILE] [--no-subgroup-matrix]
 *       [--br 64 --bc 16 [--rs 2]] [--tiles BRxBC[xRS[xDV]],...] [--reps 20]
 *
 * Times Attention.forward with timestamp queries (timeDispatches) at Qwen3-4B's heads (H=32,
 * Hkv=8, Dh=128) for B=4, T=512 (one example per row, and four packed examples per row) and
 * B=1, T=2048; prints ms and TFLOP/s counting 4·B·H·T²·Dh/2 FLOPs (the causal half of QKᵀ and PV,
 * whatever the packing), and checks a few (row, head) outputs against the float64 reference.
 * `--small` runs small shapes in seconds (for lavapipe); `--tiles` times several tile variants in
 * one run; `--no-subgroup-matrix` opens the device without chromium-experimental-subgroup-matrix
 * (which switches Dawn to the Vulkan memory model and can change the speed of plain f32 kernels).
 *
 * Measured on one NVIDIA H100 80GB HBM3 (driver 580.159.04, Dawn from npm webgpu 0.6.2,
 * subgroup-matrix feature on), 2026-11-25, `node dist/bench/attention.js --tiles 64x16,32x32,...`;
 * tiles written BR×BC×RS×DV, 64x16x2x4 being the default where 48 KiB of workgroup memory exist:
 *   B=4 T=512, one example per row   64x16x2x4 0.592 ms 14.5 TFLOP/s   32x32x4x4 0.918 ms  9.4
 *   B=4 T=512, four examples per row 64x16x2x4 0.298 ms 28.8 (effective: skipped tiles count)
 *   B=1 T=2048                       64x16x2x4 1.968 ms 17.5           32x32x4x4 3.291 ms 10.4
 * Errors against float64 on the checked rows: o ≤ 7e-8 of max |o|, lse ≤ 3e-7 relative.
 * (The f32 FMA peak of the card is 67 TFLOP/s; a plain 64×64-tile WGSL matmul reaches 28.6.)
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Attention, attentionRowRef, type AttentionDims, type AttentionTiles } from '../src/kernels/attention.js';
import { submitDispatches, timeDispatches } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import { Rng } from '../tests/helpers/random.js';

interface Case extends AttentionDims {
  /** Packed examples per batch row (equal lengths). */
  readonly examples: number;
}

interface Result {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  Dh: number;
  examples: number;
  br: number;
  bc: number;
  rs: number;
  dv: number;
  ms: number;
  tflops: number;
  /** max |o − ref| / max |ref| over the checked rows, and the same for lse */
  oErr: number;
  lseErr: number;
}

const FULL: readonly Case[] = [
  { B: 4, T: 512, H: 32, Hkv: 8, Dh: 128, examples: 1 },
  { B: 4, T: 512, H: 32, Hkv: 8, Dh: 128, examples: 4 },
  { B: 1, T: 2048, H: 32, Hkv: 8, Dh: 128, examples: 1 },
];
const SMALL: readonly Case[] = [
  { B: 1, T: 96, H: 4, Hkv: 2, Dh: 128, examples: 1 },
  { B: 2, T: 24, H: 4, Hkv: 2, Dh: 16, examples: 2 },
];

function parseTiles(values: { br?: string; bc?: string; rs?: string; tiles?: string }): (AttentionTiles | undefined)[] {
  if (values.tiles) {
    return values.tiles.split(',').map((s) => {
      const [br, bc, rs, dv] = s.split('x').map(Number);
      return { br, bc, rs, dv };
    });
  }
  if (values.br || values.bc) return [{ br: Number(values.br ?? 32), bc: Number(values.bc ?? 32), rs: values.rs ? Number(values.rs) : undefined }];
  return [undefined];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: 'boolean', default: false },
      json: { type: 'string' },
      'no-subgroup-matrix': { type: 'boolean', default: false },
      br: { type: 'string' },
      bc: { type: 'string' },
      rs: { type: 'string' },
      tiles: { type: 'string' },
      reps: { type: 'string', default: '20' },
    },
  });
  const gpu = await Gpu.open(values['no-subgroup-matrix'] ? { disable: ['chromium-experimental-subgroup-matrix'] } : {});
  console.log(`device: ${gpu.describe()}`);
  const reps = Number(values.reps);
  const results: Result[] = [];
  const cases = values.small ? SMALL : FULL;
  for (const c of cases) {
    const N = c.B * c.T;
    const rng = new Rng(N + c.Dh);
    const q = rng.f32(N * c.H * c.Dh);
    const k = rng.f32(N * c.Hkv * c.Dh);
    const v = rng.f32(N * c.Hkv * c.Dh);
    const seg = new Int32Array(N);
    for (let n = 0; n < N; n++) seg[n] = Math.floor(((n % c.T) * c.examples) / c.T);
    const t = {
      o: gpu.tensor('o', [N, c.H * c.Dh], 'f32'),
      lse: gpu.tensor('lse', [N, c.H], 'f32'),
      q: gpu.tensorFrom('q', [N, c.H * c.Dh], 'f32', q),
      k: gpu.tensorFrom('k', [N, c.Hkv * c.Dh], 'f32', k),
      v: gpu.tensorFrom('v', [N, c.Hkv * c.Dh], 'f32', v),
      segIds: gpu.tensorFrom('seg', [N], 'i32', seg),
    };
    for (const tiles of parseTiles(values)) {
      const att = await Attention.create(gpu, { headDim: c.Dh, tiles });
      const d = att.forward('attention', t, c);
      gpu.fill32(t.o, 0x7fc00000);
      gpu.fill32(t.lse, 0x7fc00000);
      submitDispatches(gpu, [d]);
      const o = await gpu.readF32(t.o);
      const lse = await gpu.readF32(t.lse);
      // a few (batch row, token, head): first, last, and two in between
      const picks: [number, number, number][] = [
        [0, 0, 0],
        [c.B - 1, c.T - 1, c.H - 1],
        [0, Math.floor(c.T / 2) + 1, Math.floor(c.H / 3)],
        [c.B - 1, Math.floor((3 * c.T) / 4), c.H - 2],
      ];
      let oErr = 0;
      let oMax = 0;
      let lseErr = 0;
      for (const [b, i, h] of picks) {
        const ref = attentionRowRef(q, k, v, seg, c, b, i, h);
        const at = ((b * c.T + i) * c.H + h) * c.Dh;
        for (let d = 0; d < c.Dh; d++) {
          const err = Math.abs(o[at + d] - ref.o[d]);
          oErr = Math.max(oErr, Number.isNaN(err) ? Infinity : err);
          oMax = Math.max(oMax, Math.abs(ref.o[d]));
        }
        const le = Math.abs(lse[(b * c.T + i) * c.H + h] - ref.lse) / Math.max(Math.abs(ref.lse), 1);
        lseErr = Math.max(lseErr, Number.isNaN(le) ? Infinity : le);
      }
      // Ten dispatches per timed pass keep the GPU busy (and its clocks up) between timestamps;
      // the first configuration is timed twice so that clock ramp-up does not count.
      const list = Array<typeof d>(10).fill(d);
      if (results.length === 0) await timeDispatches(gpu, list, reps, 3);
      const sec = (await timeDispatches(gpu, list, reps, 3)) / list.length;
      const flops = (4 * c.B * c.H * c.T * c.T * c.Dh) / 2;
      const r: Result = {
        B: c.B,
        T: c.T,
        H: c.H,
        Hkv: c.Hkv,
        Dh: c.Dh,
        examples: c.examples,
        br: att.tiles.br,
        bc: att.tiles.bc,
        rs: att.tiles.rs,
        dv: att.tiles.dv,
        ms: sec * 1e3,
        tflops: flops / sec / 1e12,
        oErr: oErr / Math.max(oMax, 1e-30),
        lseErr,
      };
      results.push(r);
      console.log(
        `B=${r.B} T=${r.T} H=${r.H} Hkv=${r.Hkv} Dh=${r.Dh} examples/row=${r.examples} tiles ${r.br}x${r.bc}x${r.rs}x${r.dv}: ` +
          `${r.ms.toFixed(3)} ms, ${r.tflops.toPrecision(3)} TFLOP/s, max err o ${r.oErr.toExponential(2)}, lse ${r.lseErr.toExponential(2)}`,
      );
    }
  }
  const bad = results.filter((r) => !(r.oErr < 1e-4 && r.lseErr < 1e-5));
  if (values.json) {
    writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), subgroupMatrix: gpu.has('chromium-experimental-subgroup-matrix'), results }, null, 2) + '\n');
  }
  gpu.destroy();
  if (bad.length > 0) {
    console.error(`attention bench: ${bad.length} configuration(s) disagree with the float64 reference`);
    process.exitCode = 1;
  }
}

await main();
