import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import type { KernelSpec } from '../../src/kernels/kernel.js';
import { readShader } from '../../src/kernels/shader.js';
import { tensorView, type Tensor } from '../../src/kernels/tensor.js';
import { peftKey, type LoraAdapter } from '../../src/model/lora.js';
import { Adamw, AdamwOptimizer, adamwStepRef, type AdamwHyper, type AdamwVariant } from '../../src/train/adamw.js';
import { createGradNormState, GradNorm, readGradNormState } from '../../src/train/grad-norm.js';
import { ARENA_ALIGN_ELEMENTS, moveLoraToArena, ParamArena, planArena } from '../../src/train/param-arena.js';
import { expectClose, NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * tests/kernels/layouts.test.ts checks the specs of src/kernels; this does the same for the
 * optimiser kernels of src/train (bindings by name, order and access; params struct field by field).
 */
describe('src/train kernel specs match their WGSL', async () => {
  const dir = join(import.meta.dirname, '../../src/train');
  const specs: [string, KernelSpec][] = [];
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.ts'))) {
    const mod = (await import(join(dir, f))) as Record<string, unknown>;
    for (const [name, v] of Object.entries(mod)) {
      if (v && typeof v === 'object' && 'file' in v && 'bindings' in v && 'params' in v) specs.push([`${f}:${name}`, v as KernelSpec]);
    }
  }
  it('finds the optimiser and grad-norm specs', () => {
    expect(specs.map(([w]) => w.split(':')[1]).sort()).toEqual(['adamw8bitStepSpec', 'adamwStepSpec', 'gradNormFinishSpec', 'gradNormPartialSpec']);
  });
  for (const [where, spec] of specs) {
    it(`${where} (${spec.file})`, () => {
      const code = readShader(spec.file);
      const re = /@group\(0\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage\s*,\s*read_write|storage\s*,\s*read)\s*>\s*(\w+)/g;
      const decl = [...code.matchAll(re)].map((m) => `${m[1]}:${m[3]}:${m[2].includes('read_write') ? 'read_write' : m[2] === 'uniform' ? 'uniform' : 'read'}`);
      expect(decl).toEqual(spec.bindings.map((b, i) => `${i}:${b.name}:${b.access}`));
      const body = new RegExp(`struct\\s+${spec.params.struct}\\s*\\{([^}]*)\\}`).exec(code)?.[1] ?? '';
      const fields = body
        .split(/[,\n]/)
        .map((s) => s.replace(/\/\/.*$/, '').trim())
        .filter(Boolean)
        .map((s) => s.split(':').map((x) => x.trim()));
      expect(fields).toEqual(spec.params.fields.map(([n, t]) => [n, t]));
      expect(code).toMatch(new RegExp(`var<uniform>\\s*params\\s*:\\s*${spec.params.struct}\\b`));
    });
  }
});

describe('ParamArena', () => {
  it('plans 256-element aligned slots in the given order', () => {
    const layout = planArena([
      { name: 'a', shape: [4, 32] },
      { name: 'b', shape: [300] },
      { name: 'c', shape: [2, 256] },
    ]);
    expect(layout.slots.map((s) => [s.name, s.offset, s.count])).toEqual([
      ['a', 0, 128],
      ['b', 256, 300],
      ['c', 768, 512],
    ]);
    expect(layout.count).toBe(1280);
    expect(() => planArena([{ name: 'a', shape: [1] }, { name: 'a', shape: [2] }])).toThrow(/listed twice/);
  });

  it('moves a LoRA adapter into one buffer and gives matching gradient views', async () => {
    const gpu = await testGpu();
    const rng = new Rng(3);
    const R = 4;
    const shapes = { q_proj: [64, 32], down_proj: [32, 96] } as const;
    const host = new Map<string, Float32Array>();
    const layers = [0, 1].map((l) => {
      const entry: LoraAdapter['layers'][number] = {};
      for (const [p, [nOut, k]] of Object.entries(shapes) as [keyof typeof shapes, readonly [number, number]][]) {
        const a = rng.f32(R * k);
        const b = rng.f32(nOut * R);
        host.set(peftKey(l, p, 'A'), a).set(peftKey(l, p, 'B'), b);
        (entry as Record<string, unknown>)[p] = { a: gpu.tensorFrom(`A${l}${p}`, [R, k], 'f32', a), b: gpu.tensorFrom(`B${l}${p}`, [nOut, R], 'f32', b) };
      }
      return entry;
    });
    const source: LoraAdapter = { config: { r: R, alpha: 8, dropout: 0, targetModules: ['q_proj', 'down_proj'], useRslora: false }, scale: 2, layers };
    const moved = moveLoraToArena(gpu, 'lora', source, { destroySource: true });
    expect(moved.arena.slots.length).toBe(8);
    expect(moved.arena.slots.every((s) => s.offset % ARENA_ALIGN_ELEMENTS === 0)).toBe(true);
    const all = await gpu.readF32(moved.arena.params);
    for (const s of moved.arena.slots) {
      expect(Array.from(all.subarray(s.offset, s.offset + s.count))).toEqual(Array.from(host.get(s.name)!));
    }
    // padding stays zero
    const used = new Set(moved.arena.slots.flatMap((s) => Array.from({ length: s.count }, (_, i) => s.offset + i)));
    expect(all.some((x, i) => !used.has(i) && x !== 0)).toBe(false);
    const a1 = moved.adapter.layers[1].down_proj!.a;
    expect(a1.buffer).toBe(moved.arena.params.buffer);
    expect(Array.from(await gpu.readF32(a1))).toEqual(Array.from(host.get(peftKey(1, 'down_proj', 'A'))!));
    const dB = moved.grads[0].q_proj!.b;
    expect(dB.buffer).toBe(moved.arena.grads.buffer);
    expect(dB.offset).toBe(moved.arena.slot(peftKey(0, 'q_proj', 'B')).offset * 4);
    gpu.fill32(moved.arena.grads, NAN_WORD);
    const enc = gpu.device.createCommandEncoder();
    moved.arena.encodeClearGrads(enc);
    gpu.device.queue.submit([enc.finish()]);
    expect((await gpu.readF32(moved.arena.grads)).every((x) => x === 0)).toBe(true);
  });
});

const HYPER: AdamwHyper = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

/** Writes a GradNormState as the grad-norm kernel would: norm, clip coefficient, non-finite count. */
function setClip(gpu: Gpu, state: Tensor, clipCoef: number, nonFinite = 0): void {
  const w = new Uint32Array(4);
  new Float32Array(w.buffer)[1] = clipCoef;
  w[2] = nonFinite;
  gpu.write(state, w);
}

/** n elements inside a larger buffer whose tail is poisoned with NaN, to catch writes past n. */
function viewWithPoisonedTail(gpu: Gpu, label: string, n: number, data?: Float32Array): { t: Tensor; whole: Tensor } {
  const whole = gpu.tensor(label, [n + 64], 'f32');
  gpu.fill32(whole, NAN_WORD);
  const t = tensorView(whole.buffer, label, [n], 'f32');
  gpu.write(t, data ?? new Float32Array(n));
  return { t, whole };
}

describe('AdamW', () => {
  // tiny, realistic (the 66M-parameter Qwen3-4B adapter at r = 32 is one buffer; 262,144 is a
  // slice of it that keeps lavapipe quick) and awkward (not a multiple of the workgroup)
  for (const variant of ['torch', 'bnb'] as AdamwVariant[]) {
    for (const n of [3, 262_144, 1001]) {
      it(`${variant}: matches the float64 reference over 5 steps at n=${n}`, async () => {
        const gpu = await testGpu();
        const rng = new Rng(n + (variant === 'torch' ? 0 : 7));
        const p0 = rng.f32(n, 1);
        const params = viewWithPoisonedTail(gpu, 'params', n, p0);
        const grads = gpu.tensor('grads', [n], 'f32');
        const m = viewWithPoisonedTail(gpu, 'm', n);
        const v = viewWithPoisonedTail(gpu, 'v', n);
        const gradNorm = createGradNormState(gpu, 'clip');
        const kernel = await Adamw.create(gpu, variant);
        const prog = kernel.bind('adamw', { params: params.t, grads, m: m.t, v: v.t, gradNorm }, HYPER);
        const ref = { params: Float64Array.from(p0), m: new Float64Array(n), v: new Float64Array(n) };
        for (let t = 1; t <= 5; t++) {
          const g = rng.f32(n, 0.05);
          if (n > 10) for (let i = 0; i < n; i += 97) g[i] = 0;
          const step = { lr: 1e-3 * (1 + 0.5 * t), step: t, gradScale: 0.5 };
          const clipCoef = t === 3 ? 0.25 : 1;
          gpu.write(grads, g);
          setClip(gpu, gradNorm, clipCoef);
          prog.setStep(step);
          submitDispatches(gpu, prog.dispatches);
          adamwStepRef(variant, ref, g, HYPER, step, { clipCoef, nonFinite: 0 });
        }
        // f32 state vs float64: a few ulp per step of the terms (|g| ≈ 0.025), which may cancel in m
        expectClose('m', await gpu.readF32(m.t), ref.m, 1e-5, 1e-8);
        expectClose('v', await gpu.readF32(v.t), ref.v, 1e-5, 1e-12);
        // params: ~1 ulp of |p| per step, plus a relative 1e-6 of each lr-sized update
        expectClose('params', await gpu.readF32(params.t), ref.params, 1e-6, 1e-8);
        for (const { whole } of [params, m, v]) expect((await gpu.readF32(whole)).subarray(n).every(Number.isNaN)).toBe(true);
      });
    }
  }

  it('agrees with torch.optim.AdamW after clip_grad_norm_ (values from torch 2.11 on an H100)', async () => {
    // torch: p = Parameter(p0); AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1); each step
    // p.grad = g·0.5, clip_grad_norm_([p], 0.03), step() with lr 1e-2, 2e-2, 5e-3 (torch.cuda, foreach).
    const gpu = await testGpu();
    const n = 16;
    const p0 = Float32Array.from({ length: n }, (_, i) => (((i * 37) % 17) - 8) / 16);
    const grads = [0, 1, 2].map((s) => Float32Array.from({ length: n }, (_, i) => (((i * 13 + s * 7) % 23) - 11) / 256));
    const target = { params: gpu.tensorFrom('p', [n], 'f32', p0), grads: gpu.tensor('g', [n], 'f32') };
    const clip = createGradNormState(gpu, 'clip');
    const norm = (await GradNorm.create(gpu)).bind('norm', { state: clip, grads: target.grads }, { maxNorm: 0.03 });
    const opt = await AdamwOptimizer.create(gpu, 'adamw', target, clip, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 });
    const norms: number[] = [];
    for (const [s, lr] of [1e-2, 2e-2, 5e-3].entries()) {
      gpu.write(target.grads, grads[s]);
      norm.setGradScale(0.5);
      opt.setStep({ lr, step: s + 1, gradScale: 0.5 });
      submitDispatches(gpu, [...norm.dispatches, ...opt.dispatches]);
      norms.push((await readGradNormState(gpu, clip)).totalNorm);
    }
    const torch = {
      norms: [0.05240784212946892, 0.052005965262651443, 0.051748599857091904],
      param: [
        -0.46807119250297546, -0.33952853083610535, -0.09902376681566238, 0.06284990161657333, 0.26388421654701233, 0.4276256561279297,
        -0.4327618479728699, -0.26674821972846985, -0.08865655213594437, 0.1520879566669464, 0.28086376190185547, 0.517662525177002,
        -0.37882599234580994, -0.18403516709804535, -0.014736659824848175, 0.17273582518100739,
      ],
      expAvg: [
        -0.0010620674584060907, 0.00030112755484879017, -0.00014651771925855428, -0.0011154924286529422, 0.0007690319907851517,
        -0.0001999427768168971, -0.0009196052560582757, 0.0007156069041229784, -4.055785211676266e-6, -0.00045170087832957506,
        0.0009114939020946622, 0.0004638487007468939, -0.0005051260231994092, 0.0013793983962386847, 0.00041042364318855107,
        -0.00030923885060474277,
      ],
      expAvgSq: [
        1.8276912783221633e-7, 1.7052201428668923e-7, 1.2725716658223973e-7, 2.0513549259248975e-7, 1.4010079496529215e-7,
        1.6227586741024425e-7, 1.9181392474365566e-7, 1.877717892284636e-7, 1.6445240191842458e-7, 1.3816610078265512e-7,
        2.0544642609365837e-7, 1.2822451367355825e-7, 1.689673183591367e-7, 1.8663850198663567e-7, 1.7167808152862563e-7,
        1.6597786611782794e-7,
      ],
    };
    // f32 rounding differences only (summation order of the norm, fused multiply-adds): a few ulp;
    // exp_avg's terms are ~1e-3 (ulp 1e-10) and cancel in some elements
    expectClose('grad norms', norms, torch.norms, 1e-6, 0);
    expectClose('param', await gpu.readF32(target.params), torch.param, 4e-7, 1e-9);
    expectClose('exp_avg', await gpu.readF32(opt.m), torch.expAvg, 1e-6, 3e-10);
    expectClose('exp_avg_sq', await gpu.readF32(opt.v), torch.expAvgSq, 1e-6, 0);
  });

  it('skips the whole step when the grad-norm state flags a non-finite gradient', async () => {
    const gpu = await testGpu();
    const n = 1000;
    const rng = new Rng(1);
    const p0 = rng.f32(n);
    const target = { params: gpu.tensorFrom('p', [n], 'f32', p0), grads: gpu.tensorFrom('g', [n], 'f32', rng.f32(n)) };
    const gradNorm = createGradNormState(gpu, 'clip');
    const opt = await AdamwOptimizer.create(gpu, 'adamw', target, gradNorm, HYPER);
    setClip(gpu, gradNorm, 0, 2);
    opt.setStep({ lr: 1e-2, step: 1 });
    submitDispatches(gpu, opt.dispatches);
    expect(Array.from(await gpu.readF32(target.params))).toEqual(Array.from(p0));
    expect((await gpu.readF32(opt.m)).every((x) => x === 0)).toBe(true);
  });

  it('gives the same bits when a buffer is split into binding-sized chunks', async () => {
    const gpu = await testGpu();
    const n = 3 * 16384 + 100;
    const rng = new Rng(2);
    const p0 = rng.f32(n);
    const g = rng.f32(n, 0.1);
    const results: Float32Array[] = [];
    for (const chunkElements of [undefined, 16384]) {
      const target = { params: gpu.tensorFrom('p', [n], 'f32', p0), grads: gpu.tensorFrom('g', [n], 'f32', g) };
      const opt = await AdamwOptimizer.create(gpu, 'adamw', target, createGradNormState(gpu, 'clip'), HYPER, { chunkElements });
      expect(opt.dispatches.length).toBe(chunkElements ? 4 : 1);
      for (let t = 1; t <= 2; t++) {
        opt.setStep({ lr: 1e-3, step: t });
        submitDispatches(gpu, opt.dispatches);
      }
      results.push(await gpu.readF32(target.params));
    }
    expect(Array.from(results[1])).toEqual(Array.from(results[0]));
  });

  it('updates a whole arena in one dispatch', async () => {
    const gpu = await testGpu();
    const arena = ParamArena.create(gpu, 'lora', [
      { name: 'A', shape: [4, 37] },
      { name: 'B', shape: [53, 4] },
    ]);
    const rng = new Rng(4);
    const pA = rng.f32(4 * 37);
    const gA = rng.f32(4 * 37, 0.1);
    gpu.write(arena.param('A'), pA);
    gpu.write(arena.grad('A'), gA);
    const opt = await AdamwOptimizer.create(gpu, 'adamw', arena, createGradNormState(gpu, 'clip'), HYPER);
    expect(opt.dispatches.length).toBe(1);
    opt.setStep({ lr: 1e-2, step: 1 });
    submitDispatches(gpu, opt.dispatches);
    const ref = { params: Float64Array.from(pA), m: new Float64Array(pA.length), v: new Float64Array(pA.length) };
    adamwStepRef('torch', ref, gA, HYPER, { lr: 1e-2, step: 1 });
    // one step: a few ulp
    expectClose('A', await gpu.readF32(arena.param('A')), ref.params, 1e-6, 1e-8);
    // B had zero gradients and zero values: still zero, and so is the padding
    const all = await gpu.readF32(arena.params);
    expect(all.subarray(arena.slot('B').offset).every((x) => x === 0)).toBe(true);
  });
});
