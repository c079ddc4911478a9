import type { Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { gradScratchSpecs, packedScratchSpecs, savedSpecs, type LayerDims } from '../model/decoder-layer.js';
import { planBuffer, type PlanBuffer } from '../model/buffer-plan.js';
import { lossHeadPath, lossHeadPlan, type LossHeadMode } from '../model/loss-head.js';
import { attentionOnTensorCores, attentionScalePlan, rowScalePlan, type ComputePath } from '../model/compute-path.js';
import { checkpointedLayers, type RecomputePolicy } from './recompute.js';

/**
 * The buffers of one micro-batch program (TrainStep.build allocates exactly these, by name):
 * inputs, every layer's input x_l, the Saved sets (one shared set for the recomputed layers 0..K−1,
 * one per layer for K..L−1), the gradient scratch, the head and the rope table.
 */
export interface MicroBatchSettings {
  /** B rows of T tokens. */
  readonly batch: number;
  readonly seq: number;
  readonly r: number;
  readonly targets: readonly Projection[];
  readonly recompute: RecomputePolicy;
  /** lora_dropout > 0 needs a dropped copy of each LoRA input. */
  readonly loraDropout: number;
  readonly lossHead: LossHeadMode;
  /** Tokens per logits chunk. */
  readonly lossChunkTokens: number;
  /** The projections' path (default 'f32'); tensor cores add the row-scale buffer (and the chunked head's, lossHeadPlan). */
  readonly compute?: ComputePath;
  /** Keep the saved layers' F16_SAVED activations in f16 (default `savesF16`: on the tensor-core path). */
  readonly savedF16?: boolean;
}

/**
 * Whether the saved layers keep their F16_SAVED activations (src/model/decoder-layer.ts: the
 * attention's q, k, v and output, the MLP's gate and up) in f16 with per-row scales (Saved.packed;
 * act recomputed): on the tensor-core path, whose kernels take f16 operands anyway (issue 11 item
 * 4), unless `savedF16` says otherwise; the f32 path stays the reference.
 */
export function savesF16(s: { readonly savedF16?: boolean; readonly compute?: ComputePath }): boolean {
  return s.savedF16 ?? s.compute === 'tensor-cores';
}

/** Names of the step's own plan entries (the Saved and gradient-scratch sets are named from their specs). */
export const STEP_BUFFERS = {
  inputIds: 'input_ids (N) i32',
  positionIds: 'position_ids (N) i32',
  segmentIds: 'segment_ids (N) i32',
  seed: 'dropout seed (1) u32',
  xDrop: 'lora dropped input (N, max K)',
  identity: 'identity index (N) i32',
  xs: 'x_l (N, D): input of each layer, then the last output',
  xf: 'xf (N, D): final norm output',
  dxf: 'dxf (N, D): its gradient',
  rstdF: 'final rstd (N)',
  ropeCos: 'rope cos (T, Dh/2) f32',
  ropeSin: 'rope sin (T, Dh/2) f32',
} as const;

/** Plan names of a Saved buffer: the recomputed layers' shared set, or the per-layer saved sets. */
export const sharedSavedName = (spec: string): string => `layer scratch ${spec}`;
export const layerSavedName = (spec: string): string => `saved ${spec}`;

export function planMicroBatch(c: Qwen3Config, s: MicroBatchSettings): PlanBuffer[] {
  const L = c.numHiddenLayers;
  const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V } = c;
  const N = s.batch * s.seq;
  const K = checkpointedLayers(s.recompute, L);
  const dims: LayerDims = { N, D, H, Hkv, Dh, F, eps: c.rmsNormEps };
  const n = STEP_BUFFERS;
  const out: PlanBuffer[] = [
    planBuffer(n.inputIds, 'inputs', 'step', [N], 'i32'),
    planBuffer(n.positionIds, 'inputs', 'step', [N], 'i32'),
    planBuffer(n.segmentIds, 'inputs', 'step', [N], 'i32'),
    planBuffer(n.seed, 'inputs', 'step', [1], 'u32'),
  ];
  // LoRA dropout: the dropped input of a projection, regenerated in the backward pass from the
  // micro-batch's seed, and the gradient dU·A before its mask is applied on the way into dX.
  if (s.loraDropout > 0) {
    const maxK = Math.max(D, H * Dh, F);
    out.push(planBuffer(n.xDrop, 'scratch', 'layer', [N, maxK], 'f32'));
  }
  out.push(planBuffer(n.identity, 'scratch', 'run', [N], 'i32'));
  out.push(planBuffer(n.xs, 'saved', 'step', [N, D], 'f32', { count: L + 1 }));
  const f16 = savesF16(s);
  if (K > 0) for (const sp of savedSpecs(dims, s.targets, s.r, { save: true, lse: true })) out.push(planBuffer(sharedSavedName(sp.name), 'scratch', 'layer', sp.shape, sp.dtype));
  if (K < L) {
    for (const sp of savedSpecs(dims, s.targets, s.r, { save: true, lse: true, f16 })) out.push(planBuffer(layerSavedName(sp.name), 'saved', 'step', sp.shape, sp.dtype, { count: L - K }));
    // f16 activations are unpacked into f32 scratch: the recomputed layers' shared set where there is one
    if (f16 && K === 0) for (const sp of packedScratchSpecs(dims)) out.push(planBuffer(sp.name, 'scratch', 'layer', sp.shape, 'f32'));
  }
  for (const sp of gradScratchSpecs(dims, s.targets.length > 0 ? s.r : undefined, attentionOnTensorCores(s.compute, Dh))) out.push(planBuffer(sp.name, 'scratch', sp.key === 'dx' ? 'step' : 'layer', sp.shape, 'f32'));
  out.push(planBuffer(n.xf, 'scratch', 'step', [N, D], 'f32'), planBuffer(n.dxf, 'scratch', 'step', [N, D], 'f32'), planBuffer(n.rstdF, 'scratch', 'step', [N], 'f32'));
  out.push(planBuffer(n.ropeCos, 'scratch', 'run', [s.seq, Dh / 2], 'f32'), planBuffer(n.ropeSin, 'scratch', 'run', [s.seq, Dh / 2], 'f32'));
  out.push(...rowScalePlan(s.compute, N));
  out.push(...attentionScalePlan(s.compute, s.batch, Hkv, Dh));
  out.push(...lossHeadPlan(N, V, D, { mode: s.lossHead, chunkTokens: s.lossChunkTokens, matmul: lossHeadPath(s.compute, s.lossHead, V, D) }, true));
  return out;
}

/** The entries of a whole step plan that the micro-batch program allocates itself. */
export function microBatchEntries(buffers: readonly PlanBuffer[]): PlanBuffer[] {
  return buffers.filter((b) => b.allocatedBy === undefined && (b.category === 'inputs' || b.category === 'saved' || b.category === 'scratch'));
}

/** Differences between two lists of plan entries (name, count, bytes), for an error message; empty when equal. */
export function planDifferences(a: readonly PlanBuffer[], b: readonly PlanBuffer[]): string[] {
  const key = (x: PlanBuffer): string => `${x.name}: ${x.count} × ${x.bytes} B`;
  const ka = new Set(a.map(key));
  const kb = new Set(b.map(key));
  return [...[...ka].filter((k) => !kb.has(k)).map((k) => `planned only: ${k}`), ...[...kb].filter((k) => !ka.has(k)).map((k) => `built only: ${k}`)];
}

/** Names of the Trainer's own entries: the running sums over the micro-batches since the last reset. */
export const TRAINER_BUFFERS = {
  lossAccum: 'running loss sum (1) f32',
  correctAccum: 'running right-argmax count (1) f32',
} as const;

/** The Trainer's own buffers (Trainer.create allocates exactly these). */
export function planRunningSums(): PlanBuffer[] {
  return [
    planBuffer(TRAINER_BUFFERS.lossAccum, 'scratch', 'run', [1], 'f32', { allocatedBy: 'trainer' }),
    planBuffer(TRAINER_BUFFERS.correctAccum, 'scratch', 'run', [1], 'f32', { allocatedBy: 'trainer' }),
  ];
}
