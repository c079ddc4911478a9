/**
 * Flash attention forward on subgroup matrices (tensor cores) against the f32 kernel, same call.
 *
 *   npx tsc -p . && node dist/bench/attention-sgm.js [--json FILE] [--keys 32,16] [--reps 20]
 *
 * Times AttentionSgm.forward (and Attention.forward, the f32 path) with timestamp queries at
 * Qwen3-4B's heads (H=32, Hkv=8, Dh=128) for B=4, T=512 (one example per row, and four packed
 * examples per row) and B=1, T=2048; prints ms and TFLOP/s counting 4·B·H·T²·Dh/2 FLOPs (the causal
 * half of QKᵀ and PV), and checks a few (row, head) outputs against the float64 reference. The head
 * scales are computed on the GPU by HeadScale and timed apart (three dispatches per layer).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Attention, attentionRowRef, type AttentionDims } from '../src/kernels/attention.js';
import { AttentionBackward } from '../src/kernels/attention-backward.js';
import { AttentionSgm, attentionScaleLayout } from '../src/kernels/attention-sgm.js';
import { AttentionSgmBackward } from '../src/kernels/attention-sgm-backward.js';
import { submitDispatches, timeDispatches, type Dispatch } from '../src/kernels/dispatch.js';
import { Gpu } from '../src/kernels/gpu.js';
import { Rng } from '../tests/helpers/random.js';

interface Case extends AttentionDims {
  readonly examples: number;
}

const CASES: readonly Case[] = [
  { B: 4, T: 512, H: 32, Hkv: 8, Dh: 128, examples: 1 },
  { B: 4, T: 512, H: 32, Hkv: 8, Dh: 128, examples: 4 },
  { B: 1, T: 2048, H: 32, Hkv: 8, Dh: 128, examples: 1 },
];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { json: { type: 'string' }, keys: { type: 'string', default: '32,16' }, reps: { type: 'string', default: '20' } } });
  const gpu = await Gpu.open();
  console.log(`device: ${gpu.describe()}`);
  const reps = Number(values.reps);
  const f32 = await Attention.create(gpu, { headDim: 128 });
  const f32Back = await AttentionBackward.create(gpu, { headDim: 128 });
  const sgmBack = await AttentionSgmBackward.create(gpu, { headDim: 128 });
  const kernels = await Promise.all(values.keys!.split(',').map((k) => AttentionSgm.create(gpu, { headDim: 128, keys: Number(k) })));
  const results: Record<string, unknown>[] = [];
  let warm = false;
  for (const c of CASES) {
    const N = c.B * c.T;
    const rng = new Rng(N + c.Dh);
    const q = rng.f32(N * c.H * c.Dh);
    const k = rng.f32(N * c.Hkv * c.Dh);
    const v = rng.f32(N * c.Hkv * c.Dh);
    const seg = new Int32Array(N);
    for (let n = 0; n < N; n++) seg[n] = Math.floor(((n % c.T) * c.examples) / c.T);
    const layout = attentionScaleLayout(c.B, c.Hkv);
    const t = {
      o: gpu.tensor('o', [N, c.H * c.Dh], 'f32'),
      lse: gpu.tensor('lse', [N, c.H], 'f32'),
      q: gpu.tensorFrom('q', [N, c.H * c.Dh], 'f32', q),
      k: gpu.tensorFrom('k', [N, c.Hkv * c.Dh], 'f32', k),
      v: gpu.tensorFrom('v', [N, c.Hkv * c.Dh], 'f32', v),
      segIds: gpu.tensorFrom('seg', [N], 'i32', seg),
      scales: gpu.tensor('scales', [layout.length], 'f32'),
      dO: gpu.tensorFrom('dO', [N, c.H * c.Dh], 'f32', rng.f32(N * c.H * c.Dh)),
      dq: gpu.tensor('dq', [N, c.H * c.Dh], 'f32'),
      dk: gpu.tensor('dk', [N, c.Hkv * c.Dh], 'f32'),
      dv: gpu.tensor('dv', [N, c.Hkv * c.Dh], 'f32'),
      delta: gpu.tensor('delta', [N, c.H], 'f32'),
      stats: gpu.tensor('stats', [N, c.H, 2], 'f32'),
    };
    const variants: { name: string; d: Dispatch }[] = [
      { name: 'f32', d: f32.forward('attention f32', t, c) },
      ...kernels.map((a) => ({ name: `sgm BC=${a.keysPerTile}`, d: a.forward('attention sgm', t, c).at(-1)! })),
    ];
    const scaleList = kernels[0].forward('attention sgm', t, c).slice(0, -1);
    submitDispatches(gpu, scaleList);
    const flops = (4 * c.B * c.H * c.T * c.T * c.Dh) / 2;
    for (const { name, d } of variants) {
      gpu.fill32(t.o, 0x7fc00000);
      gpu.fill32(t.lse, 0x7fc00000);
      submitDispatches(gpu, [d]);
      const o = await gpu.readF32(t.o);
      const lse = await gpu.readF32(t.lse);
      let oErr = 0;
      let oMax = 0;
      let lseErr = 0;
      for (const [b, i, h] of [
        [0, 0, 0],
        [c.B - 1, c.T - 1, c.H - 1],
        [0, Math.floor(c.T / 2) + 1, Math.floor(c.H / 3)],
        [c.B - 1, Math.floor((3 * c.T) / 4), c.H - 2],
      ]) {
        const ref = attentionRowRef(q, k, v, seg, c, b, i, h);
        const at = ((b * c.T + i) * c.H + h) * c.Dh;
        for (let e = 0; e < c.Dh; e++) {
          const err = Math.abs(o[at + e] - ref.o[e]);
          oErr = Math.max(oErr, Number.isNaN(err) ? Infinity : err);
          oMax = Math.max(oMax, Math.abs(ref.o[e]));
        }
        const le = Math.abs(lse[(b * c.T + i) * c.H + h] - ref.lse) / Math.max(Math.abs(ref.lse), 1);
        lseErr = Math.max(lseErr, Number.isNaN(le) ? Infinity : le);
      }
      const list = Array<Dispatch>(10).fill(d);
      if (!warm) {
        await timeDispatches(gpu, list, reps, 3);
        warm = true;
      }
      const sec = (await timeDispatches(gpu, list, reps, 3)) / list.length;
      const r = { ...c, kernel: name, ms: sec * 1e3, tflops: flops / sec / 1e12, oErr: oErr / Math.max(oMax, 1e-30), lseErr };
      results.push(r);
      console.log(`B=${c.B} T=${c.T} examples/row=${c.examples} ${name}: ${r.ms.toFixed(3)} ms, ${r.tflops.toPrecision(3)} TFLOP/s, err o ${r.oErr.toExponential(2)}, lse ${lseErr.toExponential(2)}`);
    }
    // Backward (FLOPs counted as 2.5× the forward's, the FlashAttention-2 convention), after the sgm forward wrote o and lse.
    submitDispatches(gpu, kernels[0].forward('attention sgm', t, c));
    for (const [name, list] of [
      ['backward f32', f32Back.backward('attention backward f32', t, c)],
      ['backward sgm', sgmBack.backward('attention backward sgm', t, c)],
    ] as const) {
      const sec = await timeDispatches(gpu, [...list, ...list, ...list, ...list, ...list], reps, 3) / 5;
      const dq = await gpu.readF32(t.dq);
      const nan = dq.filter((x) => !Number.isFinite(x)).length;
      const r = { ...c, kernel: name, ms: sec * 1e3, tflops: (2.5 * flops) / sec / 1e12, nonFinite: nan };
      results.push(r);
      console.log(`B=${c.B} T=${c.T} examples/row=${c.examples} ${name}: ${r.ms.toFixed(3)} ms, ${r.tflops.toPrecision(3)} TFLOP/s (2.5× forward FLOPs), non-finite dq ${nan}`);
    }
    const scaleSec = (await timeDispatches(gpu, scaleList, reps, 3)) / 1;
    console.log(`B=${c.B} T=${c.T} head scales (q, k, v): ${(scaleSec * 1e3).toFixed(3)} ms`);
    results.push({ ...c, kernel: 'head scales q,k,v', ms: scaleSec * 1e3 });
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), results }, null, 2) + '\n');
  gpu.destroy();
}

await main();
