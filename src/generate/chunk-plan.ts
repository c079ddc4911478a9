import type { Projection } from '../model/checkpoint.js';
import type { Qwen3Config } from '../model/config.js';
import { savedSpecs } from '../model/decoder-layer.js';
import { planBuffer, planTotal, type PlanBuffer } from '../model/buffer-plan.js';
import { rowScalePlan, type ComputePath } from '../model/compute-path.js';

/**
 * The buffers of one generation chunk program (src/generate/chunk-program.ts) of C rows, which
 * ChunkProgram.build allocates exactly, by name: the step-input buffer, the layer's shared set
 * without lse (KV-cache attention), its split scratch, the last row's head and the logits with
 * their readback buffer. The KV cache itself is the Generator's (not listed here).
 */
export interface ChunkPlanSettings {
  /** C: rows of the program. */
  readonly rows: number;
  /** Key splits of the attention (AttentionDecode.splitsFor). */
  readonly splits: number;
  readonly r?: number;
  readonly targets: readonly Projection[];
  /** i32 words of the step-input buffer (ids | positions | chunk | last, each section aligned). */
  readonly inputWords: number;
  /** The projections' path (default 'f32'; a one-row program stays on its matrix-vector kernel): tensor cores add the row-scale buffer. */
  readonly compute?: ComputePath;
}

/** Names of the chunk program's own plan entries (the layer set is named from its specs). */
export const CHUNK_BUFFERS = {
  input: 'step input (ids | positions | chunk | last) i32',
  x: 'x (C, D) f32 — residual stream',
  oPart: 'attention splits (S, C, H·Dh) f32',
  mlPart: 'attention split stats (S, C, H, 2) f32',
  xLast: 'x last (1, D) f32 — residual stream at row n−1',
  xf: 'xf (1, D) f32 — final norm of the last row',
  rstdLast: 'rstd last (1) f32',
  logits: 'logits (1, V) f32',
  readback: 'logits readback (V) f32',
} as const;

export function planChunkProgram(c: Qwen3Config, s: ChunkPlanSettings): { readonly buffers: readonly PlanBuffer[]; readonly total: number } {
  const b = (name: string, shape: readonly number[], dtype: 'f32' | 'i32', usage?: 'readback'): PlanBuffer => planBuffer(name, 'scratch', 'step', shape, dtype, { usage, bound: usage === undefined });
  const { hiddenSize: D, numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: Dh, intermediateSize: F, vocabSize: V } = c;
  const C = s.rows;
  const n = CHUNK_BUFFERS;
  const buffers: PlanBuffer[] = [b(n.input, [s.inputWords], 'i32'), b(n.x, [C, D], 'f32')];
  for (const sp of savedSpecs({ N: C, D, H, Hkv, Dh, F, eps: c.rmsNormEps }, s.targets, s.r ?? 0, { save: false, lse: false, rows: 'C' })) buffers.push(b(sp.name, sp.shape, 'f32'));
  buffers.push(b(n.oPart, [s.splits, C, H * Dh], 'f32'), b(n.mlPart, [s.splits, C, H, 2], 'f32'));
  buffers.push(b(n.xLast, [1, D], 'f32'), b(n.xf, [1, D], 'f32'), b(n.rstdLast, [1], 'f32'));
  buffers.push(b(n.logits, [1, V], 'f32'), b(n.readback, [V], 'f32', 'readback'));
  buffers.push(...rowScalePlan(s.compute, C));
  return Object.freeze({ buffers: Object.freeze(buffers), total: planTotal(buffers) });
}
