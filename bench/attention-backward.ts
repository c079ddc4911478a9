/**
 * Flash attention backward benchmark (FlashAttention-2 form: delta, dK/dV and dQ passes).
 *
 *   npx tsc -p . && node dist/bench/attention-backward.js [--small] [--json FILE] [--no-subgroup-matrix]
 *       [--dkdv BCxBR[xRB[xKG]],...] [--dq BRxBC[xRB[xRQ]],...] [--reps 20]
 *
 * Times AttentionBackward.backward with timestamp queries (timeDispatches) at Qwen3-4B's heads
 * (H=32, Hkv=8, Dh=128) for B=4, T=512 (one example per row, and four packed examples per row)
 * and B=1, T=2048, on o and lse from the GPU forward. For every tile variant of a pass (the
 * first of each list is the one the totals use; without a list, the device's default) it prints
 * that pass's ms; then the three passes together: ms and TFLOP/s counting 2.5× the forward's
 * 4·B·H·T²·Dh/2 FLOPs (the usual convention; the passes really do 3.5×: S and dP are computed
 * in both the dK/dV and the dQ pass). Pass lines show TFLOP/s of their own work (dK/dV: S, dP,
 * dV, dK = 2× the forward; dQ: S, dP, dQ = 1.5×). A few dQ rows and dK/dV rows are checked
 * against the float64 reference. `--small` runs small shapes in seconds (for lavapipe).
 * Tile variants worth timing on a 48 KiB device (first = default there; KG=1 / RQ=4 double the
 * threads per workgroup, RB trades score-block reuse for busy threads):
 *   --dkdv 16x16,16x16x1x1,16x16x2x2,16x16x4x2,32x8,32x8x1x1 --dq 16x16,16x16x1x4,16x16x2x8,16x16x4x8,32x8
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Attention, type AttentionDims } from '../src/kernels/attention.js';
import {
  AttentionBackward,
  attentionBackwardRowRef,
  type AttentionBackwardTiles,
  type DkdvTiles,
  type DqTiles,
} from '../src/kernels/attention-backward.js';
import { submitDispatches, timeDispatches, type Dispatch } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import type { Tensor } from '../src/kernels/tensor.js';
import { Rng } from '../tests/helpers/random.js';

interface Case extends AttentionDims {
  /** Packed examples per batch row (equal lengths). */
  readonly examples: number;
}

interface PassResult {
  pass: 'delta' | 'dkdv' | 'dq';
  tiles: string;
  ms: number;
  tflops: number;
}

interface Result {
  B: number;
  T: number;
  H: number;
  Hkv: number;
  Dh: number;
  examples: number;
  dkdv: string;
  dq: string;
  ms: number;
  /** 2.5× the forward's FLOPs per second. */
  tflops: number;
  passes: PassResult[];
  /** max |gpu − ref| / max |ref| over the checked rows, per gradient */
  dqErr: number;
  dkErr: number;
  dvErr: number;
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

function parseList<T>(text: string | undefined, make: (n: number[]) => T): T[] {
  if (!text) return [];
  return text.split(',').map((s) => make(s.split('x').map(Number)));
}

const tilesText = {
  dkdv: (t: Required<DkdvTiles>) => `${t.bc}x${t.br}x${t.rb}x${t.kg}`,
  dq: (t: Required<DqTiles>) => `${t.br}x${t.bc}x${t.rb}x${t.rq}`,
};

/** Seconds per run of `list`: ten copies per timed pass keep the clocks up between timestamps. */
async function timeList(gpu: Gpu, list: readonly Dispatch[], reps: number): Promise<number> {
  const many = Array.from({ length: 10 }, () => list).flat();
  return (await timeDispatches(gpu, many, reps, 3)) / 10;
}

/**
 * float64 dq of query (b, i, h), and dk, dv of key (b, j, g) summed over the group's heads and
 * the queries at or after j (each from the row reference).
 */
function referenceRows(x: { dO: Float32Array; q: Float32Array; k: Float32Array; v: Float32Array; seg: Int32Array }, c: Case, b: number, i: number, h: number, j: number) {
  const { T, H, Hkv, Dh } = c;
  const scale = 1 / Math.sqrt(Dh);
  const g = Math.floor(h / (H / Hkv));
  const dq = new Float64Array(Dh);
  const row = attentionBackwardRowRef(x.dO, x.q, x.k, x.v, x.seg, c, b, i, h);
  for (let jj = 0; jj <= i; jj++) {
    const kj = ((b * T + jj) * Hkv + g) * Dh;
    for (let d = 0; d < Dh; d++) dq[d] += scale * row.ds[jj] * x.k[kj + d];
  }
  const dk = new Float64Array(Dh);
  const dv = new Float64Array(Dh);
  for (let hh = g * (H / Hkv); hh < (g + 1) * (H / Hkv); hh++) {
    for (let ii = j; ii < T; ii++) {
      const r = attentionBackwardRowRef(x.dO, x.q, x.k, x.v, x.seg, c, b, ii, hh);
      if (r.p[j] === 0 && r.ds[j] === 0) continue;
      const qi = ((b * T + ii) * H + hh) * Dh;
      for (let d = 0; d < Dh; d++) {
        dk[d] += scale * r.ds[j] * x.q[qi + d];
        dv[d] += r.p[j] * x.dO[qi + d];
      }
    }
  }
  return { dq, dk, dv, g };
}

function rowError(out: Float32Array, at: number, ref: Float64Array, acc: { err: number; max: number }): void {
  for (let d = 0; d < ref.length; d++) {
    const e = Math.abs(out[at + d] - ref[d]);
    acc.err = Math.max(acc.err, Number.isNaN(e) ? Infinity : e);
    acc.max = Math.max(acc.max, Math.abs(ref[d]));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      small: { type: 'boolean', default: false },
      json: { type: 'string' },
      'no-subgroup-matrix': { type: 'boolean', default: false },
      dkdv: { type: 'string' },
      dq: { type: 'string' },
      reps: { type: 'string', default: '20' },
    },
  });
  const gpu = await Gpu.open(values['no-subgroup-matrix'] ? { disable: ['chromium-experimental-subgroup-matrix'] } : {});
  console.log(`device: ${gpu.describe()}`);
  const reps = Number(values.reps);
  const dkdvList = parseList<DkdvTiles>(values.dkdv, ([bc, br, rb, kg]) => ({ bc, br, rb, kg }));
  const dqList = parseList<DqTiles>(values.dq, ([br, bc, rb, rq]) => ({ br, bc, rb, rq }));
  const results: Result[] = [];
  for (const c of values.small ? SMALL : FULL) {
    const N = c.B * c.T;
    const rng = new Rng(N + c.Dh + c.examples);
    const x = {
      q: rng.f32(N * c.H * c.Dh),
      k: rng.f32(N * c.Hkv * c.Dh),
      v: rng.f32(N * c.Hkv * c.Dh),
      dO: rng.f32(N * c.H * c.Dh),
      seg: new Int32Array(N),
    };
    for (let n = 0; n < N; n++) x.seg[n] = Math.floor(((n % c.T) * c.examples) / c.T);
    const f32 = (label: string, w: number, data?: Float32Array): Tensor => (data ? gpu.tensorFrom(label, [N, w], 'f32', data) : gpu.tensor(label, [N, w], 'f32'));
    const t = {
      dq: f32('dq', c.H * c.Dh),
      dk: f32('dk', c.Hkv * c.Dh),
      dv: f32('dv', c.Hkv * c.Dh),
      dO: f32('dO', c.H * c.Dh, x.dO),
      q: f32('q', c.H * c.Dh, x.q),
      k: f32('k', c.Hkv * c.Dh, x.k),
      v: f32('v', c.Hkv * c.Dh, x.v),
      o: f32('o', c.H * c.Dh),
      lse: f32('lse', c.H),
      segIds: gpu.tensorFrom('seg', [N], 'i32', x.seg),
      delta: f32('delta', c.H),
    };
    const fwd = await Attention.create(gpu, { headDim: c.Dh });
    submitDispatches(gpu, [fwd.forward('attention', { o: t.o, lse: t.lse, q: t.q, k: t.k, v: t.v, segIds: t.segIds }, c)]);

    // The variants: the first entry of each list (or the device default) is used for the totals.
    const variants: Partial<AttentionBackwardTiles>[] = [{ dkdv: dkdvList[0], dq: dqList[0] }];
    for (const dkdv of dkdvList.slice(1)) variants.push({ dkdv, dq: dqList[0] });
    for (const dq of dqList.slice(1)) variants.push({ dkdv: dkdvList[0], dq });
    const forwardFlops = (4 * c.B * c.H * c.T * c.T * c.Dh) / 2;
    const passes: PassResult[] = [];
    let chosen: { att: AttentionBackward; list: Dispatch[] } | undefined;
    for (const [n, tiles] of variants.entries()) {
      const att = await AttentionBackward.create(gpu, { headDim: c.Dh, tiles });
      const list = att.backward('attention backward', t, c);
      if (n === 0) {
        chosen = { att, list };
        if (results.length === 0) await timeList(gpu, list, reps);  // clocks up before the first timing
        passes.push({ pass: 'delta', tiles: '', ms: 0, tflops: 0 });
        passes[0].ms = (await timeList(gpu, [list[0]], reps)) * 1e3;
      }
      submitDispatches(gpu, [list[0]]);  // delta for the passes timed alone
      if (n === 0 || n < dkdvList.length) {
        const ms = (await timeList(gpu, [list[1]], reps)) * 1e3;
        passes.push({ pass: 'dkdv', tiles: tilesText.dkdv(att.tiles.dkdv), ms, tflops: (2 * forwardFlops) / ms / 1e9 });
      }
      if (n === 0 || n >= dkdvList.length) {
        const ms = (await timeList(gpu, [list[2]], reps)) * 1e3;
        passes.push({ pass: 'dq', tiles: tilesText.dq(att.tiles.dq), ms, tflops: (1.5 * forwardFlops) / ms / 1e9 });
      }
    }
    for (const p of passes) {
      console.log(`  ${p.pass.padEnd(5)} ${p.tiles.padEnd(10)} ${p.ms.toFixed(3)} ms` + (p.pass === 'delta' ? '' : `, ${p.tflops.toPrecision(3)} TFLOP/s of its own work`));
    }

    const { att, list } = chosen!;
    for (const out of [t.dq, t.dk, t.dv]) gpu.fill32(out, 0x7fc00000);
    submitDispatches(gpu, list);
    const [dq, dk, dv] = [await gpu.readF32(t.dq), await gpu.readF32(t.dk), await gpu.readF32(t.dv)];
    const sec = await timeList(gpu, list, reps);
    // (batch row, query, head, key): last rows, and rows in the middle (keys late enough that the
    // float64 sum over their queries stays quick)
    const picks: [number, number, number, number][] = [
      [c.B - 1, c.T - 1, c.H - 1, c.T - 3],
      [0, Math.floor(c.T / 2) + 1, Math.floor(c.H / 3), Math.floor((7 * c.T) / 8)],
    ];
    const errs = { dq: { err: 0, max: 0 }, dk: { err: 0, max: 0 }, dv: { err: 0, max: 0 } };
    for (const [b, i, h, j] of picks) {
      const ref = referenceRows(x, c, b, i, h, j);
      rowError(dq, ((b * c.T + i) * c.H + h) * c.Dh, ref.dq, errs.dq);
      rowError(dk, ((b * c.T + j) * c.Hkv + ref.g) * c.Dh, ref.dk, errs.dk);
      rowError(dv, ((b * c.T + j) * c.Hkv + ref.g) * c.Dh, ref.dv, errs.dv);
    }
    const r: Result = {
      B: c.B,
      T: c.T,
      H: c.H,
      Hkv: c.Hkv,
      Dh: c.Dh,
      examples: c.examples,
      dkdv: tilesText.dkdv(att.tiles.dkdv),
      dq: tilesText.dq(att.tiles.dq),
      ms: sec * 1e3,
      tflops: (2.5 * forwardFlops) / sec / 1e12,
      passes,
      dqErr: errs.dq.err / Math.max(errs.dq.max, 1e-30),
      dkErr: errs.dk.err / Math.max(errs.dk.max, 1e-30),
      dvErr: errs.dv.err / Math.max(errs.dv.max, 1e-30),
    };
    results.push(r);
    console.log(
      `B=${r.B} T=${r.T} H=${r.H} Hkv=${r.Hkv} Dh=${r.Dh} examples/row=${r.examples} dkdv ${r.dkdv} dq ${r.dq}: ` +
        `${r.ms.toFixed(3)} ms, ${r.tflops.toPrecision(3)} TFLOP/s (2.5× forward FLOPs), ` +
        `max err dq ${r.dqErr.toExponential(2)}, dk ${r.dkErr.toExponential(2)}, dv ${r.dvErr.toExponential(2)}`,
    );
    for (const buf of Object.values(t)) buf.buffer.destroy();
  }
  const bad = results.filter((r) => !(r.dqErr < 1e-4 && r.dkErr < 1e-4 && r.dvErr < 1e-4));
  if (values.json) {
    writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), subgroupMatrix: gpu.has('chromium-experimental-subgroup-matrix'), results }, null, 2) + '\n');
  }
  gpu.destroy();
  if (bad.length > 0) {
    console.error(`attention backward bench: ${bad.length} configuration(s) disagree with the float64 reference`);
    process.exitCode = 1;
  }
}

await main();
