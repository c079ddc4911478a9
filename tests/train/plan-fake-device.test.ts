import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fusedWeightUnsupported } from '../../src/kernels/cross-entropy-fused.js';
import type { Gpu } from '../../src/kernels/gpu.js';
import type { LinearWeight } from '../../src/kernels/matmul.js';
import { byteLength, numel, tensorView, type DType, type Tensor } from '../../src/kernels/tensor.js';
import { PROJECTIONS, projectionShape, type Projection } from '../../src/model/checkpoint.js';
import { parseQwen3Config, type Qwen3Config } from '../../src/model/config.js';
import { embeddedConfig } from '../../src/model/embedded.js';
import type { LoraAdapter, LoraPair } from '../../src/model/lora.js';
import type { ModelWeights } from '../../src/model/weights.js';
import type { TrainKernels } from '../../src/train/kernels.js';
import { planStep, type PlanBuffer, type PlanCategory } from '../../src/train/plan.js';
import { planForward } from '../../src/model/forward-plan.js';
import { planChunkProgram } from '../../src/generate/chunk-plan.js';
import { ForwardProgram } from '../../src/model/forward.js';
import { ChunkProgram } from '../../src/generate/chunk-program.js';
import { KvCache, planKvCache } from '../../src/generate/kv-cache.js';
import type { AttentionDecode } from '../../src/kernels/attention-decode.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { TrainStep } from '../../src/train/step.js';
import { TINY_MODEL } from '../helpers/fixtures.js';
import { ROW_SCALE_BUFFER, type ComputePath } from '../../src/model/compute-path.js';
import { RecordingDevice } from '../../src/kernels/recording-device.js';
import { Gpu as GpuClass } from '../../src/kernels/gpu.js';
import { BufferUsage } from '../../src/kernels/usage.js';
import { chooseLossChunk } from '../../src/model/loss-head.js';
import type { Qwen3Model } from '../../src/model/qwen3.js';
import { baseStoredFormats } from '../../src/model/tensor-core-kernels.js';
import { placeholderAdapter, placeholderWeights } from '../../src/train/dispatch-count.js';
import { createTrainKernels } from '../../src/train/kernels.js';
import { deviceLossHead } from '../../src/train/step-settings.js';
import { Trainer } from '../../src/train/trainer.js';
import { testGpu } from '../helpers/gpu.js';

/**
 * The plan is the allocation, at real sizes: TrainStep.build runs on a FAKE device that records
 * every buffer it is asked to create and runs nothing (kernels that only hand back placeholder
 * dispatches), for the embedded default model, the fixture-sized model and a Qwen3-4B-shaped
 * config; the plan's bytes per category equal the recorded bytes.
 */
const qwen4b = parseQwen3Config(JSON.parse(readFileSync(join(import.meta.dirname, '../../configs/models/qwen3-4b.json'), 'utf8')), 'qwen3-4b.json');
const fixture = parseQwen3Config(JSON.parse(readFileSync(join(TINY_MODEL, 'config.json'), 'utf8')), 'config.json');

class FakeGpu {
  /** Every buffer asked for: its label and size. */
  readonly created: { label: string; bytes: number }[] = [];
  readonly limits = { maxStorageBufferBindingSize: 2 ** 31 - 4, maxBufferSize: 2 ** 40, minStorageBufferOffsetAlignment: 256 };
  buffer(label: string, bytes: number): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16); // WebGPU buffer sizes: Gpu.buffer's rounding
    this.created.push({ label, bytes: size });
    return { size, destroy: () => undefined } as unknown as GPUBuffer;
  }
  get createdBytes(): number {
    return this.created.reduce((a, b) => a + b.bytes, 0);
  }
  tensor(label: string, shape: readonly number[], dtype: DType): Tensor {
    return tensorView(this.buffer(label, byteLength(dtype, numel(shape))), label, shape, dtype);
  }
  tensorFrom(label: string, shape: readonly number[], dtype: DType): Tensor {
    return this.tensor(label, shape, dtype);
  }
  write(): void {}
}

/** Kernels that record nothing and return a placeholder dispatch (a list, for calls that return several). */
const fakeKernel = (): unknown => new Proxy({}, { get: () => () => [{ fake: true }] });
function fakeKernels(fused: boolean, compute: ComputePath = 'f32'): TrainKernels {
  const names = ['embedding', 'rmsnorm', 'rope', 'attention', 'matmul', 'swiglu', 'crossEntropy', 'sum', 'gatherRows', 'matmulBackward', 'attentionBackward', 'dropout', 'f16Pack'];
  const k = Object.fromEntries([...names, ...(fused ? ['crossEntropyFused'] : [])].map((n) => [n, fakeKernel()]));
  // the tensor-core path: a device claiming subgroup matrices gets these kernels, and the programs
  // plan its row-scale buffer and (head dims the tensor-core attention takes) the attention head scales
  if (compute === 'tensor-cores') k.tensorCores = { matmul: fakeKernel(), rowScale: fakeKernel(), input: fakeKernel(), attention: fakeKernel(), attentionBackward: fakeKernel() };
  return k as unknown as TrainKernels;
}

/**
 * The buffers a plan's entries stand for, one per buffer (an entry of count n is n buffers, labelled
 * "name [i]"), with the entry's bytes: what the fake device must have been asked for, exactly.
 */
function expectedBuffers(entries: readonly PlanBuffer[]): { label: string; bytes: number }[] {
  return entries.flatMap((b) => Array.from({ length: b.count }, (_, i) => ({ label: b.count > 1 ? `${b.name} [${i}]` : b.name, bytes: b.bytes })));
}

function fakeModel(c: Qwen3Config, side: FakeGpu, r: number, dropout: number): { weights: ModelWeights; adapter: LoraAdapter; grads: Partial<Record<Projection, LoraPair>>[] } {
  const t = (shape: number[]): Tensor => side.tensor('w', shape, 'f32');
  const layers = Array.from({ length: c.numHiddenLayers }, () => ({
    inputNorm: t([1]),
    postNorm: t([1]),
    qNorm: t([1]),
    kNorm: t([1]),
    proj: Object.fromEntries(PROJECTIONS.map((p) => [p, { format: 'nf4', nOut: projectionShape(c, p)[0], k: projectionShape(c, p)[1], data: t([1]) }])),
  }));
  const weights = { config: c, base: 'nf4', doubleQuant: false, embed: t([1]), finalNorm: t([1]), lmHead: { format: 'bf16', nOut: c.vocabSize, k: c.hiddenSize, data: t([1]) }, layers, bytes: 0 } as unknown as ModelWeights;
  const pairs = () => Object.fromEntries(PROJECTIONS.map((p) => [p, { a: t([r, projectionShape(c, p)[1]]), b: t([projectionShape(c, p)[0], r]) }]));
  const adapter: LoraAdapter = { config: { r, alpha: 2 * r, dropout, targetModules: PROJECTIONS, useRslora: false }, scale: 2, layers: layers.map(pairs) };
  return { weights, adapter, grads: layers.map(pairs) };
}

describe('memory plan = allocation on a fake device (real sizes)', () => {
  const shapes: [string, Qwen3Config, number, number, number][] = [
    ['embedded default', embeddedConfig(), 8, 256, 16],
    ['fixture', fixture, 2, 24, 4],
    ['Qwen3-4B', qwen4b, 4, 512, 32],
  ];
  for (const [name, c, B, T, r] of shapes) {
    it(`${name}: B${B}×${T}, r=${r}, checkpointing none/full/per-layer × dropout × fused (where it exists)/chunked head`, () => {
      for (const recompute of ['none', 'full', { checkpointLayers: Math.floor(c.numHiddenLayers / 2) }] as RecomputePolicy[]) {
        for (const dropout of [0, 0.05]) {
          // The fused head exists for small hidden sizes only (cross-entropy-fused.ts); chunked everywhere.
          const heads = fusedWeightUnsupported({ format: 'bf16', nOut: c.vocabSize, k: c.hiddenSize } as LinearWeight) ? (['chunked'] as const) : (['fused', 'chunked'] as const);
          for (const [lossHead, compute] of heads.flatMap((h) => (['f32', 'tensor-cores'] as const).map((p) => [h, p] as const))) {
            const gpu = new FakeGpu();
            const { weights, adapter, grads } = fakeModel(c, new FakeGpu(), r, dropout);
            const step = TrainStep.build(gpu as unknown as Gpu, fakeKernels(lossHead === 'fused', compute), weights, adapter, grads, { B, T, checkpointing: recompute !== 'none', recompute, lossHead });
            const plan = planStep(c, {
              batch: B,
              seq: T,
              r,
              targets: PROJECTIONS,
              gradientCheckpointing: recompute !== 'none',
              recompute,
              optimizer: 'adamw',
              base: 'nf4',
              doubleQuant: false,
              lossChunkTokens: step.shape.lossChunkTokens,
              loraDropout: dropout,
              lossHead,
              compute,
            });
            const what = `${name} ${JSON.stringify(recompute)} dropout ${dropout} ${lossHead} ${compute}`;
            expect(plan.buffers.some((b) => b.name === ROW_SCALE_BUFFER), what).toBe(compute === 'tensor-cores');
            const planned = (cat: PlanCategory) => plan.buffers.filter((b) => b.category === cat && b.allocatedBy === undefined).reduce((a, b) => a + b.bytes * b.count, 0);
            const allocated = (cat: PlanCategory) => step.allocations.filter((a) => a.category === cat).reduce((a, b) => a + b.bytes, 0);
            for (const cat of ['saved', 'scratch', 'inputs'] as const) expect(allocated(cat), `${what}: ${cat}`).toBe(planned(cat));
            // Everything the fake device was asked for is in the plan, and nothing else: the same buffers (names, bytes).
            expect(gpu.createdBytes, what).toBe(planned('saved') + planned('scratch') + planned('inputs'));
            const own = plan.buffers.filter((b) => b.allocatedBy === undefined);
            expect(own.every((b) => b.category === 'saved' || b.category === 'scratch' || b.category === 'inputs'), what).toBe(true);
            expect(gpu.created, what).toEqual(expectedBuffers(own));
            expect(step.plan, what).toEqual(own);
            // The step built from the printed plan allocates that plan; a plan for other settings is refused.
            const again = new FakeGpu();
            TrainStep.build(again as unknown as Gpu, fakeKernels(lossHead === 'fused', compute), weights, adapter, grads, { B, T, checkpointing: recompute !== 'none', recompute, lossHead, plan: plan.buffers });
            expect(again.created, what).toEqual(gpu.created);
            const other = planStep(c, { ...plan.settings, seq: T + 8 });
            expect(() => TrainStep.build(new FakeGpu() as unknown as Gpu, fakeKernels(lossHead === 'fused', compute), weights, adapter, grads, { B, T, checkpointing: recompute !== 'none', recompute, lossHead, plan: other.buffers }), what).toThrow(/memory plan was made for other settings/);
            // a plan for the other compute path is refused too (the row-scale buffer differs)
            const otherPath = planStep(c, { ...plan.settings, compute: compute === 'f32' ? 'tensor-cores' : 'f32' });
            expect(() => TrainStep.build(new FakeGpu() as unknown as Gpu, fakeKernels(lossHead === 'fused', compute), weights, adapter, grads, { B, T, checkpointing: recompute !== 'none', recompute, lossHead, plan: otherPath.buffers }), what).toThrow(/memory plan was made for other settings/);
          }
        }
      }
    });
  }

  for (const [name, c, B, T, r] of shapes) {
    it(`${name}: the evaluation forward allocates what planForward lists (adapter or none, capture, logits_last, both heads)`, () => {
      const heads = fusedWeightUnsupported({ format: 'bf16', nOut: c.vocabSize, k: c.hiddenSize } as LinearWeight) ? (['chunked'] as const) : (['fused', 'chunked'] as const);
      let cases = 0;
      for (const withAdapter of [false, true]) {
        for (const extras of [false, true]) {
          for (const [lossHead, compute] of heads.flatMap((h) => (['f32', 'tensor-cores'] as const).map((p) => [h, p] as const))) {
            const gpu = new FakeGpu();
            const { weights, adapter } = fakeModel(c, new FakeGpu(), r, 0);
            const program = ForwardProgram.build(gpu as unknown as Gpu, fakeKernels(lossHead === 'fused', compute), weights, withAdapter ? adapter : undefined, {
              B,
              T,
              lossHead,
              captureLayers: extras,
              logitsLast: extras,
            });
            const plan = planForward(c, {
              batch: B,
              seq: T,
              r: withAdapter ? r : undefined,
              targets: withAdapter ? PROJECTIONS : [],
              lossChunkTokens: program.shape.lossChunkTokens,
              lossHead,
              captureLayers: extras,
              logitsLast: extras,
              compute,
            });
            const what = `${name} adapter ${withAdapter} extras ${extras} ${lossHead} ${compute}`;
            expect(plan.buffers.some((b) => b.name === ROW_SCALE_BUFFER), what).toBe(compute === 'tensor-cores');
            expect(gpu.createdBytes, what).toBe(plan.total);
            expect(gpu.created, what).toEqual(expectedBuffers(plan.buffers));
            expect(program.bytes).toBe(plan.total);
            cases++;
          }
        }
      }
      expect(cases).toBe(8 * heads.length);
    });
  }

  for (const [name, c, , , r] of shapes) {
    it(`${name}: generation's KV cache, prefill and decode programs allocate what planKvCache and planChunkProgram list`, () => {
      const side = new FakeGpu();
      const maxContext = 64;
      const cache = {
        maxContext,
        layers: Array.from({ length: c.numHiddenLayers }, () => ({ k: side.tensor('k', [1], 'f32'), v: side.tensor('v', [1], 'f32') })),
        rope: { cos: side.tensor('cos', [1], 'f32'), sin: side.tensor('sin', [1], 'f32') },
      } as unknown as KvCache;
      const attention = { splitsFor: () => 3, writeKv: () => ({ fake: true }), forward: () => [{ fake: true }] } as unknown as AttentionDecode;
      // The KV cache the programs share: every layer's k and v, the rope table.
      const kvGpu = new FakeGpu();
      KvCache.create(kvGpu as unknown as Gpu, c, maxContext);
      expect(kvGpu.created, `${name} KV cache`).toEqual(expectedBuffers(planKvCache(c, maxContext)));
      expect(kvGpu.createdBytes).toBe(KvCache.bytesFor(c, maxContext) + 2 * maxContext * (c.headDim / 2) * 4);
      for (const rows of [1, 16]) {
        for (const [withAdapter, compute] of [false, true].flatMap((w) => (['f32', 'tensor-cores'] as const).map((p) => [w, p] as const))) {
          const gpu = new FakeGpu();
          const { weights, adapter } = fakeModel(c, new FakeGpu(), r, 0);
          const program = ChunkProgram.build(gpu as unknown as Gpu, { kernels: fakeKernels(false, compute), attention, weights, adapter: withAdapter ? adapter : undefined, cache, rows });
          // the prefill (C > 1) takes the tensor cores; one row stays on the matrix-vector kernel
          const path = rows > 1 ? compute : 'f32';
          const plan = planChunkProgram(c, { rows, splits: program.splits, r: withAdapter ? r : undefined, targets: withAdapter ? PROJECTIONS : [], inputWords: program.inputWords, compute: path });
          const what = `${name} C=${rows} adapter ${withAdapter} ${compute}`;
          expect(plan.buffers.some((b) => b.name === ROW_SCALE_BUFFER), what).toBe(path === 'tensor-cores');
          expect(gpu.createdBytes, what).toBe(plan.total);
          expect(gpu.created, what).toEqual(expectedBuffers(plan.buffers));
          expect(program.bytes).toBe(plan.total);
        }
      }
    });
  }
});

/**
 * The whole Trainer, on the recording device (src/kernels/recording-device.ts: the real kernels,
 * tile choices and split plans of the lavapipe adapter, nothing allocated or run): every storage
 * buffer Trainer.create asks for is a plan entry with the entry's bytes, in the order the Trainer
 * allocates them — the LoRA arena (params, grads), the micro-batch program's buffers, the
 * grad-norm state and partials, the optimiser state, the running sums — and nothing else.
 * Not the Trainer's, so not recorded here: the model's frozen weights (the loader creates them
 * before the Trainer; planned from their shapes, allocatedBy 'model'), the kernels' shared
 * split-reduction scratch (made by the kernel on its first split, whichever program binds it first;
 * allocatedBy 'kernels': only its bytes are checked here), the
 * source adapter (createLoraAdapter / loadLoraAdapter; the arena copies it and destroys it), and
 * each dispatch's small uniform parameter block (Kernel.bind: device.createBuffer with UNIFORM usage).
 */
/** A recording device with `like`'s adapter and limits, or with a data-centre GPU's buffer limits (2 GiB bindings) where `big`. */
function recorder(like: Gpu, big: boolean): { gpu: Gpu; device: RecordingDevice } {
  const l = like.device.limits;
  const limits = big ? new Proxy(l, { get: (t, k) => (k === 'maxStorageBufferBindingSize' ? 2 ** 31 - 4 : k === 'maxBufferSize' ? 2 ** 40 : Reflect.get(t, k)) }) : l;
  const device = new RecordingDevice(limits, like.device.adapterInfo);
  return { gpu: GpuClass.over(device as unknown as GPUDevice, like), device };
}

describe('memory plan = allocation: every buffer of the Trainer (recording device)', () => {
  // the 4B case on 2 GiB bindings (its vocabulary matrix is bound whole; lavapipe's are 128 MiB)
  const cases: [string, Qwen3Config, number, number, number, boolean][] = [
    ['fixture', fixture, 2, 24, 4, false],
    ['Qwen3-4B', qwen4b, 1, 256, 32, true],
  ];
  for (const [name, c, B, T, r, big] of cases) {
    it(`${name}: B${B}×${T}, r=${r}, adamw / adamw_8bit × dropout × checkpointing none/full`, async () => {
      const like = await testGpu();
      let checked = 0;
      for (const optimizer of ['adamw', 'adamw_8bit'] as const) {
        for (const dropout of [0, 0.05]) {
          for (const recompute of ['none', 'full'] as RecomputePolicy[]) {
            const { gpu, device } = recorder(like, big);
            // Storage buffers asked for (label, bytes); the dispatches' uniform blocks are counted apart.
            const storage: { label: string; bytes: number }[] = [];
            let uniforms = 0;
            const create = device.createBuffer.bind(device);
            device.createBuffer = (d: GPUBufferDescriptor): GPUBuffer => {
              if (d.usage & BufferUsage.UNIFORM) uniforms++;
              else storage.push({ label: d.label ?? '', bytes: d.size });
              return create(d);
            };
            const plan = planStep(c, {
              batch: B,
              seq: T,
              r,
              targets: PROJECTIONS,
              gradientCheckpointing: recompute !== 'none',
              recompute,
              optimizer,
              base: 'nf4',
              doubleQuant: false,
              lossChunkTokens: chooseLossChunk(like, B * T, c.vocabSize),
              loraDropout: dropout,
              lossHead: deviceLossHead(like, c),
              maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
            });
            const kernels = await createTrainKernels(gpu, c, undefined, { compute: 'f32', formats: baseStoredFormats('nf4', false) });
            const model = { config: c, weights: placeholderWeights(gpu, c, 'nf4', false), kernels } as unknown as Qwen3Model;
            const adapter = placeholderAdapter(gpu, c, r, PROJECTIONS, dropout);
            const before = storage.length;
            const uniformsBefore = uniforms;
            const trainer = await Trainer.create(
              gpu,
              model,
              adapter,
              { B, T, checkpointing: recompute !== 'none', recompute, lossChunkTokens: plan.settings.lossChunkTokens, optimizer: { kind: optimizer }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1, plan },
              kernels,
            );
            const what = `${name} ${optimizer} dropout ${dropout} ${JSON.stringify(recompute)}`;
            const by = (who: PlanBuffer['allocatedBy']) => plan.buffers.filter((b) => b.allocatedBy === who);
            const optimizerEntries = by('optimizer');
            const expected = [...by('arena'), ...by(undefined), ...optimizerEntries, ...by('trainer')];
            // The kernels' shared split-reduction scratch is made by the kernel on its first split
            // (here inside TrainStep.build, where this size needs one): the planned 'kernels' entry's bytes.
            const isKernelScratch = (b: { label: string }) => / scratch \(\d+ bytes\) f32$/.test(b.label);
            const kernelScratch = storage.slice(before).filter(isKernelScratch);
            const plannedScratch = by('kernels').map((b) => b.bytes);
            for (const k of kernelScratch) expect(plannedScratch, `${what}: ${k.label}`).toContain(k.bytes);
            expect(storage.slice(before).filter((b) => !isKernelScratch(b)), what).toEqual(expectedBuffers(expected));
            // what the plan lists beyond them is the loader's weights and the kernels' shared scratch only
            const rest = plan.buffers.filter((b) => !expected.includes(b));
            expect(new Set(rest.map((b) => b.allocatedBy)), what).toEqual(new Set(['model', 'kernels']));
            expect(rest.filter((b) => b.allocatedBy === 'model').every((b) => b.category === 'weights'), what).toBe(true);
            // the arena and optimiser entries are what an independent count of the adapter's shapes gives (each tensor padded to 256 elements)
            const arenaElems = PROJECTIONS.reduce((a, p) => {
              const [o, k] = projectionShape(c, p);
              return a + c.numHiddenLayers * (Math.ceil((r * k) / 256) * 256 + Math.ceil((o * r) / 256) * 256);
            }, 0);
            expect(by('arena').map((b) => b.bytes), what).toEqual([4 * arenaElems, 4 * arenaElems]);
            expect(trainer.adapter.arena.count, what).toBe(arenaElems);
            if (optimizer === 'adamw') expect(optimizerEntries.filter((b) => b.name.startsWith('adamw ')).map((b) => b.bytes), what).toEqual([4 * arenaElems, 4 * arenaElems]);
            else expect(optimizerEntries.find((b) => b.name === 'adamw8bit state1')?.bytes, what).toBe(arenaElems);
            // the uniforms left out above are the dispatches' parameter blocks (there are some)
            expect(uniforms - uniformsBefore, what).toBeGreaterThan(0);
            // a plan for the other optimiser is refused before anything is allocated
            const other = planStep(c, { ...plan.settings, optimizer: optimizer === 'adamw' ? 'adamw_8bit' : 'adamw' });
            const mark = storage.length;
            await expect(
              Trainer.create(gpu, model, placeholderAdapter(gpu, c, r, PROJECTIONS, dropout), { B, T, checkpointing: recompute !== 'none', recompute, lossChunkTokens: plan.settings.lossChunkTokens, optimizer: { kind: optimizer }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1, plan: other }, kernels),
              what,
            ).rejects.toThrow(/arena and optimiser state differ/);
            expect(storage.length - mark, what).toBe(2 * c.numHiddenLayers * PROJECTIONS.length); // only the placeholder adapter
            // The grad-norm partials depend on the device's binding size (one set per binding-sized
            // chunk): a plan made for WebGPU's default 128 MiB differs for the 4B arena, and is refused.
            const small = planStep(c, { ...plan.settings, maxStorageBufferBindingSize: undefined });
            const partials = (p: typeof plan) => p.buffers.find((b) => b.name === 'grad norm partials')!.bytes;
            if (big) {
              expect(partials(small), what).toBeGreaterThan(partials(plan));
              await expect(
                Trainer.create(gpu, model, placeholderAdapter(gpu, c, r, PROJECTIONS, dropout), { B, T, checkpointing: recompute !== 'none', recompute, lossChunkTokens: plan.settings.lossChunkTokens, optimizer: { kind: optimizer }, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, maxGradNorm: 1, plan: small }, kernels),
                what,
              ).rejects.toThrow(/grad norm partials/);
            } else expect(partials(small), what).toBe(partials(plan));
            checked++;
          }
        }
      }
      expect(checked).toBe(8);
    });
  }
});
