import { DeviceError, ShapeError } from '../errors.js';
import type { AttentionDecode } from '../kernels/attention-decode.js';
import { encodeDispatches, timeDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import type { MatmulCall } from '../kernels/matmul.js';
import type { Matvec } from '../kernels/matvec.js';
import { tensorView, type Tensor } from '../kernels/tensor.js';
import { MapMode } from '../kernels/usage.js';
import { allocatePlan, type PlanAllocation, type PlanBuffer } from '../model/buffer-plan.js';
import { CHUNK_BUFFERS, planChunkProgram } from './chunk-plan.js';
import { adapterLayer, allocSaved, decoderLayer, layerForward, savedSpecs, type LayerDims, type LayerPass } from '../model/decoder-layer.js';
import { kernelsComputePath, type ModelKernels } from '../model/kernels.js';
import { ROW_SCALE_BUFFER } from '../model/compute-path.js';
import type { LoraAdapter } from '../model/lora.js';
import type { ModelWeights } from '../model/weights.js';
import type { KvCache } from './kv-cache.js';

/**
 * One step of generation for up to C new tokens, built once: n ≤ C tokens at positions
 * p0 .. p0+n−1 go through every layer, their keys and values are written into the KV cache, they
 * attend causally over cache rows 0 .. p0+i, and the logits of the LAST of them come out (the
 * lm_head runs on one row). A Generator has two: a prefill program (C = 128 by default; longer
 * prompts take several steps) and a decode program (C = 1).
 *
 * Per layer l (rows of the chunk; rows i ≥ n are padding whose results nobody reads; the layer is
 * src/model/decoder-layer.ts with its 'kv-cache' attention, in place on x):
 *   hn = rmsnorm(x, input_layernorm)
 *   q, k, v = hn·Wqᵀ, hn·Wkᵀ, hn·Wvᵀ      (+ scale·(hn·Aᵀ)·Bᵀ for targeted projections)
 *   qn, kn = rmsnorm per head; rope(qn, kn) at positions p0 + i
 *   cache[l][:, p0+i, :] ← kn, v            (rows i < n)
 *   attn = attention(qn, cache[l])          (causal over cache rows ≤ p0 + i)
 *   x += attn·Woᵀ; hn = rmsnorm(x, post_attention_layernorm); x += (silu(hn·Wgᵀ) ⊙ hn·Wuᵀ)·Wdᵀ
 * then xl = x[n−1]; logits = rmsnorm(xl, norm)·Eᵀ (1, V).
 *
 * Projections run through the tiled matmul, except in the decode program (C = 1), where they and
 * the lm_head (one row in every program) use the matrix-vector kernel (kernels/matvec.ts): a tiled
 * matmul would compute 64–128 rows to use one.
 *
 * Per step the host writes one small buffer (ids, positions, [p0, n], last row: 0.8 KiB for C = 1,
 * 1.3 KiB for C = 128, in one writeBuffer), records the pre-bound dispatch list into one compute pass and, when asked,
 * one copy of the logits (V f32) into a mapped staging buffer: one submit, one readback, nothing
 * allocated.
 */
export interface ChunkProgramSpec {
  readonly kernels: ModelKernels;
  readonly attention: AttentionDecode;
  /**
   * A matrix-vector kernel compiled for one row: used for the lm_head (always one row) and, when
   * rows = 1, for every projection it supports (the tiled matmul otherwise).
   */
  readonly matvec?: Matvec;
  readonly weights: ModelWeights;
  readonly adapter: LoraAdapter | undefined;
  readonly cache: KvCache;
  /** C: the most new tokens one step takes. */
  readonly rows: number;
}

/** Sections of the step-input buffer, each at a 256-byte-aligned offset so it can be bound on its own. */
interface InputLayout {
  /** Offsets in i32 elements. */
  readonly ids: number;
  readonly pos: number;
  readonly chunk: number;
  readonly last: number;
  readonly length: number;
}

function inputLayout(rows: number, alignBytes: number): InputLayout {
  const align = (elements: number) => Math.ceil((elements * 4) / alignBytes) * (alignBytes / 4);
  const ids = 0;
  const pos = align(rows);
  const chunk = pos + align(rows);
  const last = chunk + align(4);
  return { ids, pos, chunk, last, length: last + 4 };
}

export class ChunkProgram {
  private constructor(
    private readonly gpu: Gpu,
    readonly rows: number,
    readonly maxContext: number,
    private readonly vocab: number,
    private readonly layout: InputLayout,
    /** Host copy of the step-input buffer, rewritten in place each step. */
    private readonly hostInput: Int32Array,
    private readonly input: Tensor,
    private readonly logits: Tensor,
    private readonly staging: GPUBuffer,
    private readonly hostLogits: Float32Array,
    private readonly dispatches: readonly Dispatch[],
    private readonly allocation: PlanAllocation,
    /** The plan the program allocated (planChunkProgram, src/generate/chunk-plan.ts). */
    readonly plan: readonly PlanBuffer[],
    /** Key splits of the attention (for benchmarks and tests). */
    readonly splits: number,
  ) {}

  static build(gpu: Gpu, spec: ChunkProgramSpec): ChunkProgram {
    const { kernels: k, attention, matvec, weights, adapter, cache, rows: C } = spec;
    if (matvec && matvec.rows !== 1) throw new ShapeError(`chunk program: the matvec kernel must be compiled for 1 row, not ${matvec.rows}`);
    const c = weights.config;
    if (!Number.isInteger(C) || C < 1) throw new ShapeError(`chunk program: rows must be a positive integer, got ${C}`);
    if (C > cache.maxContext) throw new ShapeError(`chunk program: ${C} rows exceed the KV cache's ${cache.maxContext} positions`);
    if (adapter && adapter.layers.length !== c.numHiddenLayers) {
      throw new ShapeError(`chunk program: the adapter has ${adapter.layers.length} layers, the model ${c.numHiddenLayers}; it was made for another model`);
    }
    const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V, rmsNormEps: eps } = c;
    const maxContext = cache.maxContext;
    const layout = inputLayout(C, gpu.limits.minStorageBufferOffsetAlignment);
    const splits = attention.splitsFor(C, Hkv, maxContext);
    const R = adapter?.config.r ?? 0;
    const targets = adapter?.config.targetModules ?? [];
    // Every buffer of the program, from its plan.
    // tensor cores (kernels.tensorCores) for the prefill's projections; one row stays on the matrix-vector kernel
    const compute = C > 1 ? kernelsComputePath(k) : 'f32';
    const plan = planChunkProgram(c, { rows: C, splits, r: adapter ? R : undefined, targets, inputWords: layout.length, compute });
    const a = allocatePlan(gpu, plan.buffers);
    const n = CHUNK_BUFFERS;
    const input = a.one(n.input);
    const view = (at: number, count: number, label: string) => tensorView(input.buffer, label, [count], 'i32', at * 4);
    const ids = view(layout.ids, C, 'input ids (C) i32');
    const pos = view(layout.pos, C, 'positions (C) i32');
    const chunk = view(layout.chunk, 4, 'chunk (4) i32 — [p0, n, −, −]');
    const last = view(layout.last, 1, 'last row (1) i32 — n−1');
    const dims: LayerDims = { N: C, D, H, Hkv, Dh, F, eps };
    const x = a.one(n.x);
    const b = {
      x,
      saved: allocSaved(savedSpecs(dims, targets, R, { save: false, lse: false, rows: 'C' }), targets, (sp) => a.one(sp.name), x),
      oPart: a.one(n.oPart),
      mlPart: a.one(n.mlPart),
      xLast: a.one(n.xLast),
      xf: a.one(n.xf),
      rstdLast: a.one(n.rstdLast),
    };
    const logits = a.one(n.logits);
    const staging = a.one(n.readback).buffer;

    const list: Dispatch[] = [];
    const oneRow = (label: string, call: MatmulCall): Dispatch => (matvec?.supports(call.w) ? matvec.forward(label, call) : k.matmul.forward(label, call));
    // one row: the matrix-vector kernel; chunks: the model's default (the matmul, tensor cores
    // where the path has them, and LoraDown for each projection's lora_A)
    const linear = C === 1 ? oneRow : undefined;
    list.push(k.embedding.forward('embed', { x: b.x, table: weights.embed, ids }, { tokens: C, hidden: D, vocab: V }));
    const pass: LayerPass = { kernels: k, dims, rope: { cos: cache.rope.cos, sin: cache.rope.sin, posIds: pos }, linear, rowScale: a.maybe(ROW_SCALE_BUFFER) };
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const kv = cache.layers[l];
      const layer = decoderLayer(`layer ${l}`, weights.layers[l], adapterLayer(adapter, l));
      const kvAttention = { kind: 'kv-cache', kernel: attention, kCache: kv.k, vCache: kv.v, chunk, oPart: b.oPart, mlPart: b.mlPart, maxContext, splits } as const;
      layerForward(list, pass, layer, { x: b.x, out: b.x, saved: b.saved, attention: kvAttention });
    }
    list.push(k.gatherRows.forward('last row', b.xLast, b.x, last));
    list.push(k.rmsnorm.forward('final norm', { y: b.xf, rstd: b.rstdLast, x: b.xLast, weight: weights.finalNorm }, { rows: 1, width: D, eps }));
    list.push(oneRow('lm_head', { y: logits, x: b.xf, w: weights.lmHead }));
    return new ChunkProgram(gpu, C, maxContext, V, layout, new Int32Array(layout.length), input, logits, staging, new Float32Array(V), list, a, plan.buffers, splits);
  }

  /** Bytes of every buffer this program allocated (its plan's). */
  get bytes(): number {
    return this.allocation.bytes;
  }

  /** Every buffer this program created: its plan entry, label and bytes. */
  get allocations(): PlanAllocation['records'] {
    return this.allocation.records;
  }

  /** Words of the step-input buffer (ids | positions | chunk | last). */
  get inputWords(): number {
    return this.layout.length;
  }

  /** Number of dispatches one step records. */
  get dispatchCount(): number {
    return this.dispatches.length;
  }

  /**
   * Runs `tokens` (1 ≤ n ≤ C ids in [0, V)) at positions p0 .. p0+n−1 and submits; with
   * `readLogits` the logits of the last token are copied for `readLogits()`. The caller keeps the
   * cache consistent: rows 0 .. p0−1 must hold this sequence's earlier tokens.
   */
  submit(tokens: ArrayLike<number>, p0: number, readLogits: boolean): void {
    const n = tokens.length;
    const C = this.rows;
    if (n < 1 || n > C) throw new ShapeError(`chunk program: ${n} tokens in one step; this program takes 1 to ${C}`);
    if (!Number.isInteger(p0) || p0 < 0 || p0 + n > this.maxContext) {
      throw new ShapeError(`chunk program: tokens at positions ${p0}..${p0 + n - 1} do not fit the KV cache of ${this.maxContext} positions`);
    }
    const h = this.hostInput;
    const L = this.layout;
    for (let i = 0; i < C; i++) {
      const id = i < n ? tokens[i] : 0;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocab) throw new ShapeError(`chunk program: token ${i} of the step is ${id}; expected an id in [0, ${this.vocab})`);
      h[L.ids + i] = id;
      h[L.pos + i] = i < n ? p0 + i : 0;
    }
    h[L.chunk] = p0;
    h[L.chunk + 1] = n;
    h[L.last] = n - 1;
    const gpu = this.gpu;
    gpu.check();
    gpu.write(this.input, h);
    const enc = gpu.device.createCommandEncoder();
    encodeDispatches(gpu, enc, this.dispatches);
    if (readLogits) enc.copyBufferToBuffer(this.logits.buffer, this.logits.offset, this.staging, 0, this.vocab * 4);
    gpu.device.queue.submit([enc.finish()]);
  }

  /**
   * The logits (V) of the last token of the latest `submit(…, true)`, waiting for the GPU. The
   * returned array is reused: it holds these values until the next call.
   */
  async readLogits(): Promise<Float32Array> {
    try {
      await this.staging.mapAsync(MapMode.READ);
    } catch (e) {
      this.gpu.check();
      throw new DeviceError(`reading the logits failed after kernel "${this.gpu.lastKernel}": ${(e as Error).message}`, { cause: e });
    }
    this.hostLogits.set(new Float32Array(this.staging.getMappedRange()));
    this.staging.unmap();
    this.gpu.check();
    return this.hostLogits;
  }

  /** `submit` then `readLogits`. */
  async run(tokens: ArrayLike<number>, p0: number): Promise<Float32Array> {
    this.submit(tokens, p0, true);
    return this.readLogits();
  }

  /**
   * GPU time of one step (median of `reps`, timestamp queries when the device has them) replaying
   * the latest submitted step's input: for benchmarks, to tell the GPU's share of a step from the
   * host's (submit, readback, sampling). The cache rows of that step are rewritten with the same values.
   */
  timeGpu(reps = 10): Promise<number> {
    return timeDispatches(this.gpu, this.dispatches, reps, 1);
  }

  /** Frees the program's buffers (weights, adapter and cache stay). */
  destroy(): void {
    this.allocation.destroy();
  }
}
