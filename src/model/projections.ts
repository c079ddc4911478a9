import type { Qwen3Config } from './config.js';

/** The seven linear projections of a Qwen3 decoder layer, in PEFT's target_modules spelling. */
export const PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

/** Module path inside a layer: self_attn.q_proj, mlp.down_proj, … */
export function projectionModule(p: Projection): string {
  return p === 'gate_proj' || p === 'up_proj' || p === 'down_proj' ? `mlp.${p}` : `self_attn.${p}`;
}

/** PyTorch weight shape (Nout, K) of a projection. */
export function projectionShape(c: Qwen3Config, p: Projection): [number, number] {
  const D = c.hiddenSize;
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  switch (p) {
    case 'q_proj':
      return [qDim, D];
    case 'k_proj':
    case 'v_proj':
      return [kvDim, D];
    case 'o_proj':
      return [D, qDim];
    case 'gate_proj':
    case 'up_proj':
      return [c.intermediateSize, D];
    case 'down_proj':
      return [D, c.intermediateSize];
  }
}
