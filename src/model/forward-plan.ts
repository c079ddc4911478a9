import type { Projection } from './checkpoint.js';
import type { Qwen3Config } from './config.js';
import { savedSpecs } from './decoder-layer.js';
import { planBuffer, planTotal, type PlanBuffer } from './buffer-plan.js';
import { lossHeadPath, lossHeadPlan, type LossHeadMode } from './loss-head.js';
import { attentionScalePlan, rowScalePlan, type ComputePath } from './compute-path.js';

/**
 * The buffers of the evaluation forward (ForwardProgram.build allocates exactly these, by name):
 * the layer's shared, not-saved set (src/model/decoder-layer.ts), the residual stream, the loss
 * head and what the shape asks for (logits at each row's last position, a copy of every layer's output).
 */
export interface ForwardSettings {
  readonly batch: number;
  readonly seq: number;
  /** LoRA rank and targets (none: no adapter). */
  readonly r?: number;
  readonly targets: readonly Projection[];
  readonly lossChunkTokens: number;
  readonly lossHead?: LossHeadMode;
  readonly captureLayers?: boolean;
  readonly logitsLast?: boolean;
  /** Largest position + 1 (rope table rows; default seq). */
  readonly maxPosition?: number;
  /** The projections' path (default 'f32'); tensor cores add the row-scale buffer (and the chunked head's, lossHeadPlan). */
  readonly compute?: ComputePath;
}

/** Names of the forward's own plan entries (the layer set is named from its specs). */
export const FORWARD_BUFFERS = {
  inputIds: 'input_ids (N) i32',
  positionIds: 'position_ids (N) i32',
  segmentIds: 'segment_ids (N) i32',
  x: 'x (N, D) f32 — residual stream',
  xf: 'xf (N, D) f32 — final norm output',
  lastIdx: 'last index (B) i32',
  lastRows: 'last rows (B, D) f32',
  logitsLast: 'logits_last (B, V) f32',
  identity: 'identity index (N) i32',
  layerOut: 'layer_out (N, D) f32',
  ropeCos: 'rope cos (maxPosition, Dh/2) f32',
  ropeSin: 'rope sin (maxPosition, Dh/2) f32',
} as const;

export function planForward(c: Qwen3Config, s: ForwardSettings): { readonly buffers: readonly PlanBuffer[]; readonly total: number } {
  const b = (name: string, shape: readonly number[], dtype: 'f32' | 'i32', count = 1): PlanBuffer => planBuffer(name, 'scratch', 'step', shape, dtype, { count });
  const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V } = c;
  const B = s.batch;
  const N = B * s.seq;
  const n = FORWARD_BUFFERS;
  const buffers: PlanBuffer[] = [b(n.inputIds, [N], 'i32'), b(n.positionIds, [N], 'i32'), b(n.segmentIds, [N], 'i32'), b(n.x, [N, D], 'f32')];
  for (const sp of savedSpecs({ N, D, H, Hkv, Dh, F, eps: c.rmsNormEps }, s.targets, s.r ?? 0, { save: false, lse: true })) buffers.push(b(sp.name, sp.shape, 'f32'));
  buffers.push(b(n.xf, [N, D], 'f32'));
  if (s.logitsLast) buffers.push(b(n.lastIdx, [B], 'i32'), b(n.lastRows, [B, D], 'f32'), b(n.logitsLast, [B, V], 'f32'));
  if (s.captureLayers) buffers.push(b(n.identity, [N], 'i32'), b(n.layerOut, [N, D], 'f32', c.numHiddenLayers));
  const P = s.maxPosition ?? s.seq;
  buffers.push(b(n.ropeCos, [P, Dh / 2], 'f32'), b(n.ropeSin, [P, Dh / 2], 'f32'));
  buffers.push(...rowScalePlan(s.compute, N));
  buffers.push(...attentionScalePlan(s.compute, B, Hkv, Dh));
  const mode = s.lossHead ?? 'chunked';
  buffers.push(...lossHeadPlan(N, V, D, { mode, chunkTokens: s.lossChunkTokens, matmul: lossHeadPath(s.compute, mode, V, D) }, false));
  return Object.freeze({ buffers: Object.freeze(buffers), total: planTotal(buffers) });
}
