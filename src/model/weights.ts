import type { LinearWeight } from '../kernels/matmul.js';
import type { Tensor } from '../kernels/tensor.js';
import type { Projection } from './checkpoint.js';
import type { Qwen3Config } from './config.js';

/** How the frozen base's projections are held on the GPU. */
export type BaseFormat = 'nf4' | 'full';

/** One decoder layer's frozen weights. */
export interface LayerWeights {
  /** (D) bf16x2 — input_layernorm */
  readonly inputNorm: Tensor;
  /** (D) bf16x2 — post_attention_layernorm */
  readonly postNorm: Tensor;
  /** (Dh) bf16x2 — self_attn.q_norm */
  readonly qNorm: Tensor;
  /** (Dh) bf16x2 — self_attn.k_norm */
  readonly kNorm: Tensor;
  /** The seven projections (NF4 packed + absmax, or bf16/f32 for the full base). */
  readonly proj: Readonly<Record<Projection, LinearWeight>>;
}

/** A Qwen3 checkpoint on the GPU. Norms and embedding keep their bf16 values (two per u32). */
export interface ModelWeights {
  readonly config: Qwen3Config;
  readonly base: BaseFormat;
  readonly doubleQuant: boolean;
  /** (V, D) bf16x2 — model.embed_tokens */
  readonly embed: Tensor;
  /** (D) bf16x2 — model.norm */
  readonly finalNorm: Tensor;
  /** (V, D) — the lm_head: the embedding matrix itself when tied. */
  readonly lmHead: LinearWeight;
  readonly layers: readonly LayerWeights[];
  /** Bytes of every GPU buffer above. */
  readonly bytes: number;
}
