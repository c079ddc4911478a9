import { ShapeError } from '../errors.js';
import { encodeDispatches, type Dispatch } from '../kernels/dispatch.js';
import type { Gpu } from '../kernels/gpu.js';
import type { LinearWeight } from '../kernels/matmul.js';
import { ropeTable, uploadRopeTable } from '../kernels/rope.js';
import { tensorView, type DType, type Tensor } from '../kernels/tensor.js';
import { PROJECTIONS, type Projection } from '../model/checkpoint.js';
import { shiftTargets, type Batch } from '../model/forward.js';
import { LossHead, type LossHeadMode } from '../model/loss-head.js';
import type { LoraAdapter, LoraPair } from '../model/lora.js';
import type { ModelWeights } from '../model/weights.js';
import type { TrainKernels } from './kernels.js';

/**
 * One micro-batch of QLoRA training, built once for a fixed (B, T): the forward pass saving what
 * the backward needs, the loss head (src/model/loss-head.ts: lm_head + cross-entropy and their
 * gradient, chunked on GPUs, fused on CPU adapters), and the backward pass through every layer, adding dA and dB into the
 * adapter's gradient buffers. The frozen base (NF4 or full), norms and embedding get no gradients.
 *
 * Gradient checkpointing (`checkpointing: true`): the forward keeps only each layer's input x_l;
 * the backward recomputes layer l from x_l into one shared set of activation buffers before going
 * back through it. Without it, every layer keeps its own set.
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
}

/** One layer's activations (saved, or recomputed under checkpointing). */
interface LayerActs {
  /** (N) f32 rstd of input_layernorm and post_attention_layernorm */
  rstd1: Tensor;
  rstd2: Tensor;
  /** (N, D) f32 — normed block inputs */
  hn1: Tensor;
  hn2: Tensor;
  /** (N, D) f32 — residual after attention */
  xMid: Tensor;
  /** (N, H·Dh) f32 — q before q_norm; qn after q_norm and rope */
  q: Tensor;
  qn: Tensor;
  /** (N, Hkv·Dh) f32 */
  k: Tensor;
  kn: Tensor;
  v: Tensor;
  /** (N·H), (N·Hkv) f32 — per-head rstd */
  qRstd: Tensor;
  kRstd: Tensor;
  /** (N, H·Dh) f32 attention output; (N, H) f32 its log-sum-exp */
  attn: Tensor;
  lse: Tensor;
  /** (N, F) f32 */
  gate: Tensor;
  up: Tensor;
  act: Tensor;
  /** (N, R) f32 — U = x·Aᵀ per targeted projection */
  u: Partial<Record<Projection, Tensor>>;
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
    readonly shape: Required<StepShape>,
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
    let bytes = 0;
    const t = (label: string, dims: number[], dtype: DType = 'f32'): Tensor => {
      const tensor = gpu.tensor(label, dims, dtype);
      allocated.push(tensor.buffer);
      bytes += tensor.buffer.size;
      return tensor;
    };
    const acts = (tag: string): LayerActs => ({
      rstd1: t(`${tag} rstd1 (N)`, [N]),
      rstd2: t(`${tag} rstd2 (N)`, [N]),
      hn1: t(`${tag} hn1 (N, D)`, [N, D]),
      hn2: t(`${tag} hn2 (N, D)`, [N, D]),
      xMid: t(`${tag} x_mid (N, D)`, [N, D]),
      q: t(`${tag} q (N, H·Dh)`, [N, H * Dh]),
      qn: t(`${tag} qn (N, H·Dh)`, [N, H * Dh]),
      k: t(`${tag} k (N, Hkv·Dh)`, [N, Hkv * Dh]),
      kn: t(`${tag} kn (N, Hkv·Dh)`, [N, Hkv * Dh]),
      v: t(`${tag} v (N, Hkv·Dh)`, [N, Hkv * Dh]),
      qRstd: t(`${tag} q rstd (N·H)`, [N * H]),
      kRstd: t(`${tag} k rstd (N·Hkv)`, [N * Hkv]),
      attn: t(`${tag} attn (N, H·Dh)`, [N, H * Dh]),
      lse: t(`${tag} attn lse (N, H)`, [N, H]),
      gate: t(`${tag} gate (N, F)`, [N, F]),
      up: t(`${tag} up (N, F)`, [N, F]),
      act: t(`${tag} act (N, F)`, [N, F]),
      u: Object.fromEntries(adapter.config.targetModules.map((p) => [p, t(`${tag} lora u ${p} (N, R)`, [N, R])])),
    });

    const inputs = {
      ids: t('input_ids (N) i32', [N], 'i32'),
      pos: t('position_ids (N) i32', [N], 'i32'),
      seg: t('segment_ids (N) i32', [N], 'i32'),
      seed: t('dropout seed (1) u32', [1], 'u32'),
    };
    // LoRA dropout: the dropped input of a projection, regenerated in the backward pass from the
    // micro-batch's seed, and the gradient dU·A before its mask is applied on the way into dX.
    const dropP = adapter.config.dropout;
    const maxK = Math.max(D, H * Dh, F);
    const xDrop = dropP > 0 ? t('lora dropped input (N, max K)', [N, maxK]) : undefined;
    const dDrop = dropP > 0 ? t('lora dU·A before the mask (N, max K)', [N, maxK]) : undefined;
    const view = (x: Tensor, K: number): Tensor => tensorView(x.buffer, x.label, [N, K], 'f32');
    const salt = (l: number, proj: Projection): number => l * 8 + PROJECTIONS.indexOf(proj);
    const identity = t('identity index (N) i32', [N], 'i32');
    gpu.write(identity, Int32Array.from({ length: N }, (_, i) => i));
    /** x_0 … x_L: every layer's input and the last layer's output (N, D) f32. */
    const xs = Array.from({ length: L + 1 }, (_, l) => t(`x_${l} (N, D)`, [N, D]));
    const layerActs: LayerActs[] = checkpointing ? [acts('layer scratch')] : Array.from({ length: L }, (_, l) => acts(`layer ${l}`));
    const actsOf = (l: number): LayerActs => layerActs[checkpointing ? 0 : l];
    // Gradient scratch.
    const dx = t('dx (N, D): residual gradient', [N, D]);
    const dhn = t('dhn (N, D)', [N, D]);
    const dAttn = t('d_attn (N, H·Dh)', [N, H * Dh]);
    const dq = t('dq (N, H·Dh)', [N, H * Dh]);
    const dqn = t('dqn (N, H·Dh)', [N, H * Dh]);
    const dk = t('dk (N, Hkv·Dh)', [N, Hkv * Dh]);
    const dkn = t('dkn (N, Hkv·Dh)', [N, Hkv * Dh]);
    const dv = t('dv (N, Hkv·Dh)', [N, Hkv * Dh]);
    const delta = t('attention delta (N, H)', [N, H]);
    const dAct = t('d_act (N, F)', [N, F]);
    const dU = t('dU (N, R)', [N, R]);
    // Head.
    const xf = t('xf (N, D): final norm output', [N, D]);
    const dxf = t('dxf (N, D)', [N, D]);
    const rstdF = t('final rstd (N)', [N]);
    const rope = uploadRopeTable(gpu, ropeTable(c.ropeTheta, Dh, T), 'rope');
    allocated.push(rope.cos.buffer, rope.sin.buffer);

    const list: Dispatch[] = [];
    const m = k.matmul;
    const mb = k.matmulBackward;

    /** Forward of one projection: y (=|+=) x·Wᵀ (+ s·(x·Aᵀ)·Bᵀ, U saved). */
    /** U = dropout(x)·Aᵀ of a targeted projection; returns U, or undefined when not targeted. */
    const loraDown = (l: number, p: Projection, x: Tensor, a: LayerActs): Tensor | undefined => {
      const w = weights.layers[l].proj[p];
      const pair = adapter.layers[l][p];
      const u = a.u[p];
      if (!pair || !u) return undefined;
      const xa = xDrop ? view(xDrop, w.k) : x;
      if (xDrop) list.push(k.dropout.forward(`L${l} ${p} lora dropout`, { out: xa, x, seed: inputs.seed }, { p: dropP, salt: salt(l, p), accumulate: false }));
      list.push(m.forward(`L${l} ${p} lora_A`, { y: u, x: xa, w: { format: 'f32', nOut: R, k: w.k, data: pair.a } }));
      return u;
    };
    const projForward = (l: number, p: Projection, y: Tensor, x: Tensor, a: LayerActs, accumulate: boolean): void => {
      const w = weights.layers[l].proj[p];
      const pair = adapter.layers[l][p];
      const u = loraDown(l, p, x, a);
      if (pair && u) {
        list.push(m.forward(`L${l} ${p}`, { y, x, w, accumulate, lora: { u, b: pair.b, scale: s } }));
      } else {
        list.push(m.forward(`L${l} ${p}`, { y, x, w, accumulate }));
      }
    };
    /**
     * Backward of one projection given dy: dX (=|+=) dy·W, and for a targeted projection
     *   dB += s·dyᵀ·U;  dU = s·dy·B;  dA += dUᵀ·x;  dX += dU·A.
     */
    const projBackward = (l: number, p: Projection, dX: Tensor, dy: Tensor, x: Tensor, a: LayerActs, accumulate: boolean): void => {
      const w: LinearWeight = weights.layers[l].proj[p];
      list.push(mb.input(`L${l} ${p} dX`, { dx: dX, dy, w }, { accumulate }));
      const pair = adapter.layers[l][p];
      const g = grads[l][p];
      const u = a.u[p];
      if (pair && g && u) {
        list.push(...mb.weightGrad(`L${l} ${p} dB`, { dw: g.b, dy, x: u }, { accumulate: true, scale: s }));
        list.push(...mb.inputSplit(`L${l} ${p} dU`, { dx: dU, dy, w: { format: 'f32', nOut: w.nOut, k: R, data: pair.b } }, { scale: s }));
        const aw: LinearWeight = { format: 'f32', nOut: R, k: w.k, data: pair.a };
        if (xDrop && dDrop) {
          const xa = view(xDrop, w.k);
          const dd = view(dDrop, w.k);
          list.push(k.dropout.forward(`L${l} ${p} lora dropout (again)`, { out: xa, x, seed: inputs.seed }, { p: dropP, salt: salt(l, p), accumulate: false }));
          list.push(...mb.weightGrad(`L${l} ${p} dA`, { dw: g.a, dy: dU, x: xa }, { accumulate: true }));
          list.push(mb.input(`L${l} ${p} dU·A`, { dx: dd, dy: dU, w: aw }));
          list.push(k.dropout.forward(`L${l} ${p} dX lora (masked)`, { out: dX, x: dd, seed: inputs.seed }, { p: dropP, salt: salt(l, p), accumulate: true }));
        } else {
          list.push(...mb.weightGrad(`L${l} ${p} dA`, { dw: g.a, dy: dU, x }, { accumulate: true }));
          list.push(mb.input(`L${l} ${p} dX lora`, { dx: dX, dy: dU, w: aw }, { accumulate: true }));
        }
      }
    };

    const layerForward = (l: number): void => {
      const lw = weights.layers[l];
      const a = actsOf(l);
      list.push(k.rmsnorm.forward(`L${l} input_layernorm`, { y: a.hn1, rstd: a.rstd1, x: xs[l], weight: lw.inputNorm }, { rows: N, width: D, eps }));
      projForward(l, 'q_proj', a.q, a.hn1, a, false);
      projForward(l, 'k_proj', a.k, a.hn1, a, false);
      projForward(l, 'v_proj', a.v, a.hn1, a, false);
      list.push(k.rmsnorm.forward(`L${l} q_norm`, { y: a.qn, rstd: a.qRstd, x: a.q, weight: lw.qNorm }, { rows: N * H, width: Dh, eps }));
      list.push(k.rmsnorm.forward(`L${l} k_norm`, { y: a.kn, rstd: a.kRstd, x: a.k, weight: lw.kNorm }, { rows: N * Hkv, width: Dh, eps }));
      list.push(k.rope.forward(`L${l} rope`, { q: a.qn, k: a.kn, cos: rope.cos, sin: rope.sin, posIds: inputs.pos }, { N, H, Hkv }));
      list.push(k.attention.forward(`L${l} attention`, { o: a.attn, lse: a.lse, q: a.qn, k: a.kn, v: a.v, segIds: inputs.seg }, { B, T, H, Hkv, Dh }));
      list.push(k.gatherRows.forward(`L${l} x_mid ← x_l`, a.xMid, xs[l], identity));
      projForward(l, 'o_proj', a.xMid, a.attn, a, true);
      list.push(k.rmsnorm.forward(`L${l} post_attention_layernorm`, { y: a.hn2, rstd: a.rstd2, x: a.xMid, weight: lw.postNorm }, { rows: N, width: D, eps }));
      projForward(l, 'gate_proj', a.gate, a.hn2, a, false);
      projForward(l, 'up_proj', a.up, a.hn2, a, false);
      list.push(k.swiglu.forward(`L${l} swiglu`, a.act, a.gate, a.up));
    };
    /** The part of layer l's forward that writes x_{l+1} (not needed when recomputing). */
    const layerOutput = (l: number): void => {
      const a = actsOf(l);
      list.push(k.gatherRows.forward(`L${l} x_${l + 1} ← x_mid`, xs[l + 1], a.xMid, identity));
      projForward(l, 'down_proj', xs[l + 1], a.act, a, true);
    };

    const layerBackward = (l: number): void => {
      const lw = weights.layers[l];
      const a = actsOf(l);
      // MLP: x_{l+1} = x_mid + down(act)
      projBackward(l, 'down_proj', dAct, dx, a.act, a, false);
      list.push(k.swiglu.backwardInPlace(`L${l} swiglu backward`, { gate: a.gate, up: a.up, dact: dAct })); // gate ← dgate, up ← dup
      projBackward(l, 'gate_proj', dhn, a.gate, a.hn2, a, false);
      projBackward(l, 'up_proj', dhn, a.up, a.hn2, a, true);
      list.push(k.rmsnorm.backward(`L${l} post_attention_layernorm backward`, { dx, dy: dhn, x: a.xMid, weight: lw.postNorm, rstd: a.rstd2 }, { rows: N, width: D, accumulate: true }));
      // Attention: x_mid = x_l + o(attn)
      projBackward(l, 'o_proj', dAttn, dx, a.attn, a, false);
      list.push(...k.attentionBackward.backward(`L${l} attention backward`, { dq: dqn, dk: dkn, dv, dO: dAttn, q: a.qn, k: a.kn, v: a.v, o: a.attn, lse: a.lse, segIds: inputs.seg, delta }, { B, T, H, Hkv, Dh }));
      list.push(k.rope.backward(`L${l} rope backward`, { dq: dqn, dk: dkn, cos: rope.cos, sin: rope.sin, posIds: inputs.pos }, { N, H, Hkv }));
      list.push(k.rmsnorm.backward(`L${l} q_norm backward`, { dx: dq, dy: dqn, x: a.q, weight: lw.qNorm, rstd: a.qRstd }, { rows: N * H, width: Dh, accumulate: false }));
      list.push(k.rmsnorm.backward(`L${l} k_norm backward`, { dx: dk, dy: dkn, x: a.k, weight: lw.kNorm, rstd: a.kRstd }, { rows: N * Hkv, width: Dh, accumulate: false }));
      projBackward(l, 'q_proj', dhn, dq, a.hn1, a, false);
      projBackward(l, 'k_proj', dhn, dk, a.hn1, a, true);
      projBackward(l, 'v_proj', dhn, dv, a.hn1, a, true);
      list.push(k.rmsnorm.backward(`L${l} input_layernorm backward`, { dx, dy: dhn, x: xs[l], weight: lw.inputNorm, rstd: a.rstd1 }, { rows: N, width: D, accumulate: true }));
    };

    // Forward.
    list.push(k.embedding.forward('embed', { x: xs[0], table: weights.embed, ids: inputs.ids }, { tokens: N, hidden: D, vocab: V }));
    for (let l = 0; l < L; l++) {
      layerForward(l);
      layerOutput(l);
    }
    // Head: final norm, then logits → loss (and Σ correct) → dxf.
    list.push(k.rmsnorm.forward('final norm', { y: xf, rstd: rstdF, x: xs[L], weight: weights.finalNorm }, { rows: N, width: D, eps }));
    const head = LossHead.build(gpu, k, weights.lmHead, xf, dxf, { N, backward: true, mode: shape.lossHead, lossChunkTokens: shape.lossChunkTokens });
    allocated.push(...head.allocated);
    bytes += head.bytes;
    list.push(...head.dispatches);
    list.push(k.rmsnorm.backward('final norm backward', { dx, dy: dxf, x: xs[L], weight: weights.finalNorm, rstd: rstdF }, { rows: N, width: D, accumulate: false }));
    // Backward through the layers, recomputing each one first under checkpointing.
    for (let l = L - 1; l >= 0; l--) {
      if (checkpointing) {
        // Recompute layer l from x_l; x_{l+1} is kept, so down_proj only needs its LoRA U.
        layerForward(l);
        loraDown(l, 'down_proj', actsOf(l).act, actsOf(l));
      }
      layerBackward(l);
    }
    return new TrainStep(gpu, { B, T, checkpointing, lossChunkTokens: head.chunkTokens, lossHead: head.mode }, inputs, head, head.lossSum, head.correctSum, list, allocated, bytes);
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
