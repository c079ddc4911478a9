import { ShapeError } from '../errors.js';
import { encodeDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { ropeTable, uploadRopeTable } from '../kernels/rope.js';
import type { DType, Tensor } from '../kernels/tensor.js';
import { PROJECTIONS, type Projection } from '../model/checkpoint.js';
import type { Batch } from '../batch.js';
import { shiftTargets } from '../model/forward.js';
import { adapterLayer, allocSaved, decoderLayer, gradScratchSpecs, layerBackward, layerForward, savedSpecs, type LayerDims, type LayerGradScratch, type LayerPass, type Saved } from '../model/decoder-layer.js';
import { LossHead, type LossHeadMode } from '../model/loss-head.js';
import type { LoraAdapter, LoraPair } from '../model/lora.js';
import type { ModelWeights } from '../model/weights.js';
import type { TrainKernels } from './kernels.js';
import { checkpointedLayers, type RecomputePolicy } from './recompute.js';
import { checkBatchInputs } from '../model/input-checks.js';

/**
 * One micro-batch of QLoRA training, built once for a fixed (B, T): the forward pass saving what
 * the backward needs, the loss head (src/model/loss-head.ts: lm_head + cross-entropy and their
 * gradient, chunked on GPUs, fused on CPU adapters), and the backward pass through every layer, adding dA and dB into the
 * adapter's gradient buffers. The frozen base (NF4 or full), norms and embedding get no gradients.
 *
 * Gradient checkpointing (`recompute`, src/train/recompute.ts; `checkpointing: true` = 'full'):
 * the forward keeps only the input x_l of a checkpointed layer; the backward recomputes it from
 * x_l into one shared Saved set before going back through it. Other layers keep their own set.
 * The layer itself (forward, backward, Saved) is src/model/decoder-layer.ts.
 *
 * Loss scaling: the cross-entropy gradient is that of the SUM of token losses; the optimiser step
 * multiplies the accumulated gradients by 1 / (target tokens of all micro-batches), so that
 * gradient accumulation weighs every target token equally (not a mean of means).
 *
 * Layer l (forward; backward mirrors it in reverse order):
 *   hn1 = rmsnorm(x_l)            q, k, v = proj(hn1)        qn, kn = rope(norm_h(q), norm_h(k))
 *   attn = attention(qn, kn, v)   x_mid = x_l + o_proj(attn)
 *   hn2 = rmsnorm(x_mid)          gate, up = proj(hn2)        act = silu(gate)·up
 *   x_{l+1} = x_mid + down_proj(act)
 * with proj(x) = x·Wᵀ + s·U·Bᵀ, U = x·Aᵀ for targeted projections.
 */
export interface StepShape {
  readonly B: number;
  readonly T: number;
  readonly checkpointing: boolean;
  /** Tokens per logits chunk (default: chooseLossChunk). */
  readonly lossChunkTokens?: number;
  /** The loss head's implementation (default 'auto': fused on CPU adapters, chunked elsewhere). */
  readonly lossHead?: LossHeadMode | 'auto';
  /** Which layers are recomputed (default: 'full' when `checkpointing`, else 'none'). */
  readonly recompute?: RecomputePolicy;
}

/** One buffer the step allocated: its label, plan category and bytes. */
export interface StepAllocation {
  readonly name: string;
  readonly category: 'saved' | 'scratch' | 'inputs';
  readonly bytes: number;
}

export interface MicroBatchResult {
  /** Σ of token losses (read back only when asked). */
  readonly lossSum?: number;
  /** Target tokens of this micro-batch (known on the CPU from the labels). */
  readonly targets: number;
}

export class TrainStep {
  private constructor(
    private readonly gpu: Gpu,
    readonly shape: Required<Omit<StepShape, 'recompute'>> & { readonly recompute: RecomputePolicy },
    private readonly inputs: { ids: Tensor; pos: Tensor; seg: Tensor; seed: Tensor },
    private readonly head: LossHead,
    /** (1) f32 — Σ token loss of the last micro-batch (the trainer adds it into its running sum on the GPU). */
    readonly lossSum: Tensor,
    /**
     * (1) f32 — target tokens of the last micro-batch whose argmax logit is the target (token
     * accuracy = correctSum / its target count; summed like lossSum).
     */
    readonly correctSum: Tensor,
    private readonly dispatches: readonly Dispatch[],
    private readonly allocated: readonly GPUBuffer[],
    readonly bytes: number,
    /** Every buffer the step allocated, with its plan category. */
    readonly allocations: readonly StepAllocation[],
  ) {}

  static build(gpu: Gpu, k: TrainKernels, weights: ModelWeights, adapter: LoraAdapter, grads: readonly Partial<Record<Projection, LoraPair>>[], shape: StepShape): TrainStep {
    const c = weights.config;
    const { B, T, checkpointing } = shape;
    const N = B * T;
    const D = c.hiddenSize;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const Dh = c.headDim;
    const F = c.intermediateSize;
    const V = c.vocabSize;
    const L = c.numHiddenLayers;
    const R = adapter.config.r;
    const s = adapter.scale;
    const eps = c.rmsNormEps;
    if (adapter.layers.length !== L || grads.length !== L) throw new ShapeError(`train step: adapter has ${adapter.layers.length} layers, the model ${L}`);

    const allocated: GPUBuffer[] = [];
    const allocations: StepAllocation[] = [];
    let bytes = 0;
    const t = (label: string, dims: readonly number[], category: StepAllocation['category'], dtype: DType = 'f32'): Tensor => {
      const tensor = gpu.tensor(label, [...dims], dtype);
      allocated.push(tensor.buffer);
      allocations.push({ name: label, category, bytes: tensor.buffer.size });
      bytes += tensor.buffer.size;
      return tensor;
    };
    const recompute: RecomputePolicy = shape.recompute ?? (checkpointing ? 'full' : 'none');
    const K = checkpointedLayers(recompute, L);
    const targets = adapter.config.targetModules;
    const dims: LayerDims = { N, D, H, Hkv, Dh, F, eps };
    const specs = savedSpecs(dims, targets, R, { save: true, lse: true });
    const savedSet = (tag: string, category: StepAllocation['category']): Saved => allocSaved(specs, targets, (sp) => t(`${tag} ${sp.name}`, sp.shape, category, sp.dtype));

    const inputs = {
      ids: t('input_ids (N) i32', [N], 'inputs', 'i32'),
      pos: t('position_ids (N) i32', [N], 'inputs', 'i32'),
      seg: t('segment_ids (N) i32', [N], 'inputs', 'i32'),
      seed: t('dropout seed (1) u32', [1], 'inputs', 'u32'),
    };
    // LoRA dropout: the dropped input of a projection, regenerated in the backward pass from the
    // micro-batch's seed, and the gradient dU·A before its mask is applied on the way into dX.
    const dropP = adapter.config.dropout;
    const maxK = Math.max(D, H * Dh, F);
    const xDrop = dropP > 0 ? t('lora dropped input (N, max K)', [N, maxK], 'scratch') : undefined;
    const dDrop = dropP > 0 ? t('lora dU·A before the mask (N, max K)', [N, maxK], 'scratch') : undefined;
    const salt = (l: number, proj: Projection): number => l * 8 + PROJECTIONS.indexOf(proj);
    const identity = t('identity index (N) i32', [N], 'scratch', 'i32');
    gpu.write(identity, Int32Array.from({ length: N }, (_, i) => i));
    /** x_0 … x_L: every layer's input and the last layer's output (N, D) f32. */
    const xs = Array.from({ length: L + 1 }, (_, l) => t(`x_${l} (N, D)`, [N, D], 'saved'));
    // Layers 0..K−1 are recomputed into one shared set; layers K..L−1 keep their own.
    const shared = K > 0 ? savedSet('layer scratch', 'scratch') : undefined;
    const layerSaved: Saved[] = Array.from({ length: L }, (_, l) => (l < K ? shared! : savedSet(`layer ${l}`, 'saved')));
    // Gradient scratch.
    const scratch = Object.fromEntries(gradScratchSpecs(dims, targets.length > 0 ? R : undefined).map((sp) => [sp.key, t(sp.name, sp.shape, 'scratch')])) as unknown as LayerGradScratch;
    // Head.
    const xf = t('xf (N, D): final norm output', [N, D], 'scratch');
    const dxf = t('dxf (N, D)', [N, D], 'scratch');
    const rstdF = t('final rstd (N)', [N], 'scratch');
    const rope = uploadRopeTable(gpu, ropeTable(c.ropeTheta, Dh, T), 'rope');
    allocated.push(rope.cos.buffer, rope.sin.buffer);
    allocations.push({ name: 'rope cos', category: 'scratch', bytes: rope.cos.buffer.size }, { name: 'rope sin', category: 'scratch', bytes: rope.sin.buffer.size });
    bytes += rope.cos.buffer.size + rope.sin.buffer.size;

    const list: Dispatch[] = [];
    const pass: LayerPass = { kernels: k, dims, rope: { cos: rope.cos, sin: rope.sin, posIds: inputs.pos }, identity };
    const attention = { kind: 'packed', B, T, segIds: inputs.seg } as const;
    const layers = Array.from({ length: L }, (_, l) =>
      decoderLayer(`L${l}`, weights.layers[l], adapterLayer(adapter, l), grads[l], (p) =>
        xDrop && dDrop ? { p: dropP, salt: salt(l, p), seed: inputs.seed, xDrop, dDrop } : undefined,
      ),
    );

    // Forward.
    list.push(k.embedding.forward('embed', { x: xs[0], table: weights.embed, ids: inputs.ids }, { tokens: N, hidden: D, vocab: V }));
    for (let l = 0; l < L; l++) layerForward(list, pass, layers[l], { x: xs[l], out: xs[l + 1], saved: layerSaved[l], attention });
    // Head: final norm, then logits → loss (and Σ correct) → dxf.
    list.push(k.rmsnorm.forward('final norm', { y: xf, rstd: rstdF, x: xs[L], weight: weights.finalNorm }, { rows: N, width: D, eps }));
    const head = LossHead.build(gpu, k, weights.lmHead, xf, dxf, { N, backward: true, mode: shape.lossHead, lossChunkTokens: shape.lossChunkTokens });
    allocated.push(...head.allocated);
    allocations.push({ name: 'loss head', category: 'scratch', bytes: head.bytes });
    bytes += head.bytes;
    list.push(...head.dispatches);
    list.push(k.rmsnorm.backward('final norm backward', { dx: scratch.dx, dy: dxf, x: xs[L], weight: weights.finalNorm, rstd: rstdF }, { rows: N, width: D, accumulate: false }));
    // Backward through the layers, recomputing the checkpointed ones (0..K−1) first.
    for (let l = L - 1; l >= 0; l--) {
      if (l < K) layerForward(list, pass, layers[l], { x: xs[l], out: xs[l + 1], saved: layerSaved[l], attention, recompute: true });
      layerBackward(list, pass, layers[l], { x: xs[l], saved: layerSaved[l], scratch, attention });
    }
    return new TrainStep(
      gpu,
      { B, T, checkpointing, recompute, lossChunkTokens: head.chunkTokens, lossHead: head.mode },
      inputs,
      head,
      head.lossSum,
      head.correctSum,
      list,
      allocated,
      bytes,
      allocations,
    );
  }

  get dispatchCount(): number {
    return this.dispatches.length;
  }

  /**
   * Uploads a micro-batch (B·T ids, labels, positions, segments) and its LoRA-dropout seed;
   * returns its target count. A label outside [0, V) other than −100 is a ShapeError naming it.
   */
  upload(batch: Batch, dropoutSeed = 0): number {
    const { B, T } = this.shape;
    const N = B * T;
    for (const [name, a] of [['input_ids', batch.inputIds], ['labels', batch.labels], ['position_ids', batch.positionIds], ['segment_ids', batch.segmentIds]] as const) {
      if (!a || a.length !== N) throw new ShapeError(`train step: ${name} has ${a?.length ?? 0} elements, expected B·T = ${N}`);
    }
    checkBatchInputs(batch, { B, T, vocab: this.head.V, maxPosition: T, where: 'train step' });
    const targets = shiftTargets(batch.labels!, batch.segmentIds, B, T);
    this.gpu.write(this.inputs.ids, batch.inputIds);
    this.gpu.write(this.inputs.pos, batch.positionIds!);
    this.gpu.write(this.inputs.seg, batch.segmentIds!);
    this.gpu.write(this.inputs.seed, new Uint32Array([dropoutSeed >>> 0]));
    return this.head.setTargets(targets, 'train step');
  }

  /** Records this micro-batch's forward + backward into `encoder` (one compute pass). */
  encode(encoder: GPUCommandEncoder): void {
    encodeDispatches(this.gpu, encoder, this.dispatches);
  }

  /** The last micro-batch's Σ token loss (a readback: call at logging steps only). */
  async readLossSum(): Promise<number> {
    return (await this.gpu.readF32(this.lossSum))[0];
  }

  /** The last micro-batch's count of targets predicted right (argmax = target; a readback). */
  async readCorrectCount(): Promise<number> {
    return (await this.gpu.readF32(this.correctSum))[0];
  }

  destroy(): void {
    for (const b of this.allocated) b.destroy();
  }
}
