import { ConfigError, ShapeError } from '../errors.js';
import { submitDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { ropeTable } from '../kernels/rope.js';
import type { Tensor } from '../kernels/tensor.js';
import type { Batch } from '../batch.js';
import { IGNORE_INDEX } from '../labels.js';
import { adapterLayer, allocSaved, decoderLayer, layerForward, savedSpecs, type LayerDims, type LayerPass, type Saved } from './decoder-layer.js';
import { kernelsComputePath, type ModelKernels } from './kernels.js';
import { ATTENTION_SCALES_BUFFER, ROW_SCALE_BUFFER } from './compute-path.js';
import { allocatePlan, type PlanAllocation, type PlanBuffer } from './buffer-plan.js';
import { FORWARD_BUFFERS, planForward } from './forward-plan.js';
import { chooseLossHeadFor, LossHead, type LossHeadMode } from './loss-head.js';
import type { LoraAdapter } from './lora.js';
import type { ModelWeights } from './weights.js';
import { checkBatchInputs } from './input-checks.js';

export { chooseLossChunk } from './loss-head.js';
export type { Batch } from '../batch.js';

/**
 * The forward pass of Qwen3 (+ optional LoRA) for a fixed batch shape (B, T), built once: every
 * activation buffer and every dispatch is created by `ForwardProgram.build`; `run` uploads the
 * token ids, replays the dispatch list in one compute pass and reads back only the results asked for.
 *
 * Per layer l (N = B·T tokens; the layer is src/model/decoder-layer.ts, run in place on x):
 *   hn = rmsnorm(x, input_layernorm)
 *   q, k, v = hn·Wqᵀ, hn·Wkᵀ, hn·Wvᵀ   (+ scale·(hn·Aᵀ)·Bᵀ for targeted projections)
 *   qn, kn = rmsnorm per head (q_norm, k_norm); rope(qn, kn) by position ids
 *   o = attention(qn, kn, v) — causal, same batch row and segment
 *   x += o·Woᵀ (+ LoRA)                (residual add inside the matmul epilogue)
 *   hn = rmsnorm(x, post_attention_layernorm)
 *   act = silu(hn·Wgᵀ) ⊙ (hn·Wuᵀ)     (+ LoRA on gate and up)
 *   x += act·Wdᵀ (+ LoRA)
 * then xf = rmsnorm(x, norm) and the loss head (src/model/loss-head.ts): logits = xf·Eᵀ and each
 * position's cross-entropy against its shifted label, summed on the GPU with the count of positions
 * whose argmax is the label (token accuracy).
 */
export interface ForwardShape {
  readonly B: number;
  readonly T: number;
  /**
   * Read back the residual stream after every layer, the final norm's output and each position's
   * loss (inspect, tests); layers are copied into their own buffers inside the pass.
   */
  readonly captureLayers?: boolean;
  /** Compute logits at each row's last position (B, V). */
  readonly logitsLast?: boolean;
  /** Largest position id the batches will use + 1 (default T). */
  readonly maxPosition?: number;
  /** Tokens per logits chunk (a multiple of 64); default: the most that fit one binding, at most 1024. */
  readonly lossChunkTokens?: number;
  /** The loss head's implementation (default 'auto': fused on CPU adapters, chunked elsewhere). */
  readonly lossHead?: LossHeadMode | 'auto';
}

export interface ForwardResult {
  /** Mean cross-entropy over the valid targets (NaN when there are none, as transformers). */
  readonly loss: number;
  /** Number of scored positions. */
  readonly targets: number;
  /** Scored positions whose argmax logit is the target (ties: the lowest index, as torch.argmax). */
  readonly correct: number;
  /** correct / targets (NaN when there are none). */
  readonly accuracy: number;
  /** (B, V) f32, when asked for. */
  readonly logitsLast?: Float32Array;
  /** L tensors of (B·T, D) f32, with captureLayers. */
  readonly layerOut?: Float32Array[];
  /** (B·T, D) f32 output of the final RMSNorm, with captureLayers. */
  readonly finalNorm?: Float32Array;
  /** (B·T) f32 cross-entropy of each position against its shifted target (0 where none), with captureLayers. */
  readonly tokenLoss?: Float32Array;
}

/**
 * Shifted targets as transformers' causal LM loss: target[b, t] = labels[b, t+1]; the last
 * position of a row and the last token of each packed example (whose successor belongs to
 * another example) score nothing.
 */
export function shiftTargets(labels: Int32Array, segmentIds: Int32Array | undefined, B: number, T: number): Int32Array {
  const out = new Int32Array(B * T).fill(IGNORE_INDEX);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t + 1 < T; t++) {
      const i = b * T + t;
      if (segmentIds && segmentIds[i] !== segmentIds[i + 1]) continue;
      out[i] = labels[i + 1];
    }
  }
  return out;
}

interface Buffers {
  ids: Tensor;
  pos: Tensor;
  seg: Tensor;
  x: Tensor;
  /** The layer buffers every layer reuses (not saved: the forward runs in place on x). */
  saved: Saved;
  xf: Tensor;
  lastIdx: Tensor | undefined;
  lastRows: Tensor | undefined;
  logitsLast: Tensor | undefined;
  identity: Tensor | undefined;
  layerOut: Tensor[];
}

export class ForwardProgram {
  private constructor(
    private readonly gpu: Gpu,
    readonly weights: ModelWeights,
    readonly shape: Required<Pick<ForwardShape, 'B' | 'T' | 'maxPosition' | 'lossChunkTokens' | 'lossHead'>> & ForwardShape,
    private readonly bufs: Buffers,
    private readonly head: LossHead,
    private readonly dispatches: readonly Dispatch[],
    private readonly allocation: PlanAllocation,
    /** The plan the program allocated (planForward, src/model/forward-plan.ts). */
    readonly plan: readonly PlanBuffer[],
  ) {}

  static build(gpu: Gpu, kernels: ModelKernels, weights: ModelWeights, adapter: LoraAdapter | undefined, shape: ForwardShape): ForwardProgram {
    const c = weights.config;
    const { B, T } = shape;
    if (!Number.isInteger(B) || !Number.isInteger(T) || B < 1 || T < 1) throw new ShapeError(`forward: batch shape B=${B}, T=${T} must be positive integers`);
    if (adapter && adapter.layers.length !== c.numHiddenLayers) {
      throw new ShapeError(`forward: the adapter has ${adapter.layers.length} layers, the model ${c.numHiddenLayers}`);
    }
    const N = B * T;
    const D = c.hiddenSize;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const Dh = c.headDim;
    const F = c.intermediateSize;
    const V = c.vocabSize;
    const maxPosition = shape.maxPosition ?? T;
    if (maxPosition > c.maxPositionEmbeddings) {
      throw new ConfigError(`forward: positions up to ${maxPosition} exceed max_position_embeddings ${c.maxPositionEmbeddings} of config.json`);
    }
    const R = adapter?.config.r ?? 0;
    const targets = adapter?.config.targetModules ?? [];
    const dims: LayerDims = { N, D, H, Hkv, Dh, F, eps: c.rmsNormEps };
    const choice = chooseLossHeadFor(gpu, kernels, weights.lmHead, { N, backward: false, mode: shape.lossHead, lossChunkTokens: shape.lossChunkTokens });
    // Every buffer of the program, from its plan.
    const plan = planForward(c, {
      batch: B,
      seq: T,
      r: adapter ? R : undefined,
      targets,
      lossChunkTokens: choice.chunkTokens,
      lossHead: choice.mode,
      captureLayers: shape.captureLayers,
      logitsLast: shape.logitsLast,
      maxPosition,
      compute: kernelsComputePath(kernels),
    });
    const a = allocatePlan(gpu, plan.buffers);
    const n = FORWARD_BUFFERS;
    const x = a.one(n.x);
    const bufs: Buffers = {
      ids: a.one(n.inputIds),
      pos: a.one(n.positionIds),
      seg: a.one(n.segmentIds),
      x,
      saved: allocSaved(savedSpecs(dims, targets, R, { save: false, lse: true }), targets, (sp) => a.one(sp.name), x),
      xf: a.one(n.xf),
      lastIdx: a.maybe(n.lastIdx),
      lastRows: a.maybe(n.lastRows),
      logitsLast: a.maybe(n.logitsLast),
      identity: a.maybe(n.identity),
      layerOut: shape.captureLayers ? [...a.all(n.layerOut)] : [],
    };
    const table = ropeTable(c.ropeTheta, Dh, maxPosition);
    const rope = { cos: a.one(n.ropeCos), sin: a.one(n.ropeSin) };
    gpu.write(rope.cos, table.cos);
    gpu.write(rope.sin, table.sin);
    if (bufs.identity) gpu.write(bufs.identity, Int32Array.from({ length: N }, (_, i) => i));
    if (bufs.lastIdx) gpu.write(bufs.lastIdx, Int32Array.from({ length: B }, (_, b) => b * T + T - 1));

    const k = kernels;
    const list: Dispatch[] = [];
    const eps = c.rmsNormEps;
    list.push(k.embedding.forward('embed', { x: bufs.x, table: weights.embed, ids: bufs.ids }, { tokens: N, hidden: D, vocab: V }));

    // tensor cores (kernels.tensorCores): the base projections on subgroup matrices, with the planned
    // row-scale buffer, and the packed attention where its head-scale buffer was planned
    const pass: LayerPass = { kernels: k, dims, rope: { cos: rope.cos, sin: rope.sin, posIds: bufs.pos }, rowScale: a.maybe(ROW_SCALE_BUFFER), attentionScales: a.maybe(ATTENTION_SCALES_BUFFER) };
    const attention = { kind: 'packed', B, T, segIds: bufs.seg } as const;
    for (let l = 0; l < c.numHiddenLayers; l++) {
      layerForward(list, pass, decoderLayer(`layer ${l}`, weights.layers[l], adapterLayer(adapter, l)), { x: bufs.x, out: bufs.x, saved: bufs.saved, attention });
      if (shape.captureLayers && bufs.identity) list.push(k.gatherRows.forward(`layer ${l} capture`, bufs.layerOut[l], bufs.x, bufs.identity));
    }
    list.push(k.rmsnorm.forward('final norm', { y: bufs.xf, rstd: bufs.saved.rstd1, x: bufs.x, weight: weights.finalNorm }, { rows: N, width: D, eps }));

    const head = LossHead.build(gpu, k, weights.lmHead, bufs.xf, undefined, { N, backward: false }, choice, a);
    list.push(...head.dispatches);

    if (bufs.lastIdx && bufs.lastRows && bufs.logitsLast) {
      list.push(k.gatherRows.forward('last rows', bufs.lastRows, bufs.xf, bufs.lastIdx));
      list.push(k.matmul.forward('lm_head last', { y: bufs.logitsLast, x: bufs.lastRows, w: weights.lmHead }));
    }
    return new ForwardProgram(gpu, weights, { ...shape, maxPosition, lossChunkTokens: head.chunkTokens, lossHead: head.mode }, bufs, head, list, a, plan.buffers);
  }

  /** Bytes of every buffer this program allocated (its plan's). */
  get bytes(): number {
    return this.allocation.bytes;
  }

  /** Every buffer this program created: its plan entry, label and bytes. */
  get allocations(): PlanAllocation['records'] {
    return this.allocation.records;
  }

  /** Number of dispatches one forward records. */
  get dispatchCount(): number {
    return this.dispatches.length;
  }

  /** Uploads the batch, runs the forward pass and reads back loss (and what the shape asked for). */
  async run(batch: Batch): Promise<ForwardResult> {
    const { B, T } = this.shape;
    const V = this.weights.config.vocabSize;
    const N = B * T;
    const check = (name: string, a: Int32Array | undefined): void => {
      if (a && a.length !== N) throw new ShapeError(`forward: ${name} has ${a.length} elements, expected B·T = ${B}·${T} = ${N}`);
    };
    check('input_ids', batch.inputIds);
    check('labels', batch.labels);
    check('position_ids', batch.positionIds);
    check('segment_ids', batch.segmentIds);
    validateIds('input_ids', batch.inputIds, T, (v) => v >= 0 && v < V, `a token id in [0, ${V})`);
    if (batch.labels) validateIds('labels', batch.labels, T, (v) => v === IGNORE_INDEX || (v >= 0 && v < V), `-100 or a token id in [0, ${V})`);
    const positions = batch.positionIds ?? Int32Array.from({ length: N }, (_, i) => i % T);
    validateIds('position_ids', positions, T, (v) => v >= 0 && v < this.shape.maxPosition, `a position in [0, ${this.shape.maxPosition})`);
    const segments = batch.segmentIds ?? new Int32Array(N);
    checkBatchInputs({ ...batch, positionIds: positions, segmentIds: segments }, { B, T, vocab: V, maxPosition: this.shape.maxPosition, where: 'forward' });
    const targets = batch.labels ? shiftTargets(batch.labels, segments, B, T) : new Int32Array(N).fill(IGNORE_INDEX);

    const g = this.gpu;
    g.write(this.bufs.ids, batch.inputIds);
    g.write(this.bufs.pos, positions);
    g.write(this.bufs.seg, segments);
    const count = this.head.setTargets(targets, 'forward');
    submitDispatches(g, this.dispatches);
    const sums = await this.head.readSums();
    const logitsLast = this.bufs.logitsLast ? await g.readF32(this.bufs.logitsLast) : undefined;
    const capture = this.shape.captureLayers;
    const layerOut = capture ? await Promise.all(this.bufs.layerOut.map((t) => g.readF32(t))) : undefined;
    const finalNorm = capture ? await g.readF32(this.bufs.xf) : undefined;
    const tokenLoss = capture ? await g.readF32(this.head.tokenLoss) : undefined;
    return {
      loss: count > 0 ? sums.loss / count : NaN,
      targets: count,
      correct: sums.correct,
      accuracy: count > 0 ? sums.correct / count : NaN,
      logitsLast,
      layerOut,
      finalNorm,
      tokenLoss,
    };
  }

  /** Frees the program's buffers (the weights stay). */
  destroy(): void {
    this.allocation.destroy();
  }
}

function validateIds(name: string, a: Int32Array, T: number, ok: (v: number) => boolean, expected: string): void {
  for (let i = 0; i < a.length; i++) {
    if (!ok(a[i])) {
      throw new ShapeError(`forward: ${name}[${Math.floor(i / T)}, ${i % T}] = ${a[i]}; expected ${expected}`);
    }
  }
}
