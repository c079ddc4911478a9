import { ConfigError, ShapeError } from '../errors.js';
import { encodeDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import { ropeTable } from '../kernels/rope.js';
import type { Tensor } from '../kernels/tensor.js';
import { PROJECTIONS, type Projection } from '../model/checkpoint.js';
import type { Batch } from '../batch.js';
import { shiftTargets } from '../model/forward.js';
import { allocatePlan, type PlanAllocation, type PlanAllocationRecord, type PlanBuffer } from '../model/buffer-plan.js';
import { adapterLayer, allocSaved, decoderLayer, gradScratchSpecs, layerBackward, layerForward, packedScratchSpecs, savedSpecs, type LayerDims, type LayerGradScratch, type LayerPass, type PackedScratch, type Saved } from '../model/decoder-layer.js';
import { chooseLossHeadFor, LossHead, type LossHeadMode } from '../model/loss-head.js';
import type { LoraAdapter, LoraPair } from '../model/lora.js';
import type { ModelWeights } from '../model/weights.js';
import type { TrainKernels } from './kernels.js';
import { kernelsComputePath } from '../model/kernels.js';
import { ATTENTION_SCALES_BUFFER, ROW_SCALE_BUFFER } from '../model/compute-path.js';
import { checkpointedLayers, type RecomputePolicy } from './recompute.js';
import { checkBatchInputs } from '../model/input-checks.js';
import { layerSavedName, microBatchEntries, planDifferences, planMicroBatch, savesF16, sharedSavedName, STEP_BUFFERS } from './step-plan.js';

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
  /**
   * The run's memory plan (planStep's buffers, as printed): the step allocates its own entries of it
   * (inputs, saved, scratch) and refuses a plan made for other settings. Default: planMicroBatch
   * for this shape.
   */
  readonly plan?: readonly PlanBuffer[];
  /** Keep the saved layers' F16_SAVED activations in f16 (default savesF16: on the tensor-core path). */
  readonly savedF16?: boolean;
}

/** Dispatches of one micro-batch by phase, as recorded: forward, loss head (forward and backward), backward. */
export interface StepDispatchCounts {
  readonly forward: number;
  readonly lossHead: number;
  readonly backward: number;
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
    readonly shape: Required<Omit<StepShape, 'recompute' | 'plan' | 'savedF16'>> & { readonly recompute: RecomputePolicy },
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
    /** The dispatch list's phases (their sum is dispatchCount). */
    readonly phases: StepDispatchCounts,
    private readonly buffers: PlanAllocation,
    /** The plan entries the step allocated (exactly: `allocations` lists each buffer created). */
    readonly plan: readonly PlanBuffer[],
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
    const eps = c.rmsNormEps;
    if (adapter.layers.length !== L || grads.length !== L) throw new ShapeError(`train step: adapter has ${adapter.layers.length} layers, the model ${L}`);

    const recompute: RecomputePolicy = shape.recompute ?? (checkpointing ? 'full' : 'none');
    const K = checkpointedLayers(recompute, L);
    const targets = adapter.config.targetModules;
    const dims: LayerDims = { N, D, H, Hkv, Dh, F, eps };
    const choice = chooseLossHeadFor(gpu, k, weights.lmHead, { N, backward: true, mode: shape.lossHead, lossChunkTokens: shape.lossChunkTokens });
    const compute = kernelsComputePath(k);
    const f16 = savesF16({ savedF16: shape.savedF16, compute });
    const own = planMicroBatch(c, { batch: B, seq: T, r: R, targets, recompute, loraDropout: adapter.config.dropout, lossHead: choice.mode, lossChunkTokens: choice.chunkTokens, compute, savedF16: f16 });
    let plan: readonly PlanBuffer[] = own;
    if (shape.plan) {
      plan = microBatchEntries(shape.plan);
      const diff = planDifferences(plan, own);
      if (diff.length > 0) throw new ConfigError(`train step: the memory plan was made for other settings than the step is built for (B=${B}, T=${T}, r=${R}, ${targets.length} targets, recompute ${JSON.stringify(recompute)}, ${choice.mode} head of ${choice.chunkTokens}, ${compute} compute):\n  ${diff.slice(0, 8).join('\n  ')}`);
    }
    // Every buffer of the step, from its plan.
    const bufs = allocatePlan(gpu, plan);
    const n = STEP_BUFFERS;
    const inputs = { ids: bufs.one(n.inputIds), pos: bufs.one(n.positionIds), seg: bufs.one(n.segmentIds), seed: bufs.one(n.seed) };
    const dropP = adapter.config.dropout;
    const xDrop = bufs.maybe(n.xDrop);
    const salt = (l: number, proj: Projection): number => l * 8 + PROJECTIONS.indexOf(proj);
    const identity = bufs.one(n.identity);
    gpu.write(identity, Int32Array.from({ length: N }, (_, i) => i));
    /** x_0 … x_L: every layer's input and the last layer's output (N, D) f32. */
    const xs = bufs.all(n.xs);
    // Layers 0..K−1 are recomputed into one shared set; layers K..L−1 keep their own.
    const specs = savedSpecs(dims, targets, R, { save: true, lse: true });
    const shared = K > 0 ? allocSaved(specs, targets, (sp) => bufs.one(sharedSavedName(sp.name))) : undefined;
    // f16 saved activations (savesF16) are packed from and unpacked into f32 scratch: the shared set's where there is one
    const layerSpecs = f16 ? savedSpecs(dims, targets, R, { save: true, lse: true, f16 }) : specs;
    const packedScratch: PackedScratch | undefined =
      !f16 || K === L ? undefined : (Object.fromEntries(packedScratchSpecs(dims).map((sp) => [sp.key, shared ? shared[sp.key] : bufs.one(sp.name)])) as unknown as PackedScratch);
    const layerSaved: Saved[] = Array.from({ length: L }, (_, l) => (l < K ? shared! : allocSaved(layerSpecs, targets, (sp) => bufs.all(layerSavedName(sp.name))[l - K], undefined, packedScratch)));
    // Gradient scratch.
    // tensor cores: the packed attention too where its head-scale buffer was planned (attentionOnTensorCores)
    const attentionScales = bufs.maybe(ATTENTION_SCALES_BUFFER);
    const scratch = Object.fromEntries(gradScratchSpecs(dims, targets.length > 0 ? R : undefined, attentionScales !== undefined).map((sp) => [sp.key, bufs.one(sp.name)])) as unknown as LayerGradScratch;
    // Head.
    const xf = bufs.one(n.xf);
    const dxf = bufs.one(n.dxf);
    const rstdF = bufs.one(n.rstdF);
    const table = ropeTable(c.ropeTheta, Dh, T);
    const rope = { cos: bufs.one(n.ropeCos), sin: bufs.one(n.ropeSin) };
    gpu.write(rope.cos, table.cos);
    gpu.write(rope.sin, table.sin);

    const list: Dispatch[] = [];
    // tensor cores (k.tensorCores): the base projections and their dX on subgroup matrices, with the planned row-scale buffer
    const pass: LayerPass = { kernels: k, dims, rope: { cos: rope.cos, sin: rope.sin, posIds: inputs.pos }, identity, rowScale: bufs.maybe(ROW_SCALE_BUFFER), attentionScales };
    const attention = { kind: 'packed', B, T, segIds: inputs.seg } as const;
    const layers = Array.from({ length: L }, (_, l) =>
      decoderLayer(`L${l}`, weights.layers[l], adapterLayer(adapter, l), grads[l], (p) =>
        xDrop ? { p: dropP, salt: salt(l, p), seed: inputs.seed, xDrop } : undefined,
      ),
    );

    // Forward.
    list.push(k.embedding.forward('embed', { x: xs[0], table: weights.embed, ids: inputs.ids }, { tokens: N, hidden: D, vocab: V }));
    for (let l = 0; l < L; l++) layerForward(list, pass, layers[l], { x: xs[l], out: xs[l + 1], saved: layerSaved[l], attention });
    // Head: final norm, then logits → loss (and Σ correct) → dxf.
    list.push(k.rmsnorm.forward('final norm', { y: xf, rstd: rstdF, x: xs[L], weight: weights.finalNorm }, { rows: N, width: D, eps }));
    const forwardCount = list.length;
    const head = LossHead.build(gpu, k, weights.lmHead, xf, dxf, { N, backward: true }, choice, bufs);
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
      { forward: forwardCount, lossHead: head.dispatches.length, backward: list.length - forwardCount - head.dispatches.length },
      bufs,
      plan,
    );
  }

  /** Bytes of every buffer the step allocated (its plan entries). */
  get bytes(): number {
    return this.buffers.bytes;
  }

  /** Every buffer the step created: its plan entry, label, category and bytes. */
  get allocations(): readonly PlanAllocationRecord[] {
    return this.buffers.records;
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
    this.buffers.destroy();
  }
}
