import type { AttentionBackward } from '../kernels/attention-backward.js';
import type { AttentionDecode } from '../kernels/attention-decode.js';
import type { AttentionSgm } from '../kernels/attention-sgm.js';
import type { Dispatch } from '../kernels/dispatch.js';
import type { F16Pack, F16Packed } from '../kernels/f16-pack.js';
import type { DType, Tensor } from '../kernels/tensor.js';
import { PROJECTIONS, type Projection } from './checkpoint.js';
import type { ModelKernels } from './kernels.js';
import type { LoraAdapter, LoraPair } from './lora.js';
import { projectionBackward, projectionDown, projectionForward, projectionRowScale, projectionsDown, type LinearKernel, type ProjectionDropout, type ProjectionKernels, type ProjectionUnit } from './projection.js';
import type { LayerWeights } from './weights.js';

/**
 * One Qwen3 decoder layer, written once for training, evaluation and generation (N rows):
 *
 *   hn1 = rmsnorm(x_l)              q, k, v = proj(hn1)          qn, kn = rope(norm_h(q), norm_h(k))
 *   attn = attention(qn, kn, v)     x_mid = x_l + o_proj(attn)
 *   hn2 = rmsnorm(x_mid)            gate, up = proj(hn2)         act = silu(gate)·up
 *   x_{l+1} = x_mid + down_proj(act)
 *
 * with proj = base + LoRA (src/model/projection.ts). What differs between the callers is named:
 * - `attention`: 'packed' (causal within batch row and segment, training and evaluation) or
 *   'kv-cache' (generation: kn, v written into the layer's cache, attention over cache rows);
 * - the Saved buffers: one set per layer (saved for the backward) or one shared set, with
 *   x_mid = x_{l+1} = x_l (in place; evaluation and generation);
 * - `recompute`: the forward run again before the backward under checkpointing (x_{l+1} is kept,
 *   so down_proj only needs its LoRA U).
 * `layerBackward` mirrors `layerForward` in reverse order.
 */
export interface LayerDims {
  /** Rows (tokens) of one pass. */
  readonly N: number;
  readonly D: number;
  readonly H: number;
  readonly Hkv: number;
  readonly Dh: number;
  readonly F: number;
  readonly eps: number;
}

/** Exactly what the forward keeps for the backward (or the shared set it writes when it does not save). */
export interface Saved {
  /** (N) f32 rstd of input_layernorm and post_attention_layernorm */
  readonly rstd1: Tensor;
  readonly rstd2: Tensor;
  /** (N, D) f32 — normed block inputs */
  readonly hn1: Tensor;
  readonly hn2: Tensor;
  /** (N, D) f32 — residual after attention (x itself when in place) */
  readonly xMid: Tensor;
  /** (N, H·Dh) f32 — q before q_norm; qn after q_norm and rope */
  readonly q: Tensor;
  readonly qn: Tensor;
  /** (N, Hkv·Dh) f32 */
  readonly k: Tensor;
  readonly kn: Tensor;
  readonly v: Tensor;
  /** (N·H), (N·Hkv) f32 — per-head rstd */
  readonly qRstd: Tensor;
  readonly kRstd: Tensor;
  /** (N, H·Dh) f32 attention output */
  readonly attn: Tensor;
  /** (N, H) f32 its log-sum-exp (packed attention only) */
  readonly lse?: Tensor;
  /** (N, F) f32 */
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly act: Tensor;
  /** (N, R) f32 — U = x·Aᵀ per targeted projection (one shared buffer when not saving) */
  readonly u: Partial<Record<Projection, Tensor>>;
  /**
   * The saved activations kept in f16 (F16Pack: per-row power-of-two scales), where the layer saves
   * them so (F16_SAVED): the f32 fields of the same names, and act, are then a shared f32 scratch
   * (one set for every layer), which the forward packs from and the backward refills — each
   * unpacked, act = silu(gate)·up recomputed.
   */
  readonly packed?: Readonly<Record<F16SavedKey, F16Packed>>;
}

/**
 * The saved activations a layer may keep in f16 (savedSpecs' `f16`): those only the backward's
 * matmuls, attention and SwiGLU read — the attention's q, k, v after norm and rope and its output,
 * the MLP's gate and up (act is recomputed from them). The residual stream, the norms' inputs and
 * outputs, the statistics (rstd, lse) and the LoRA U stay f32.
 */
export const F16_SAVED = ['qn', 'kn', 'v', 'attn', 'gate', 'up'] as const;
export type F16SavedKey = (typeof F16_SAVED)[number];

/** The f32 scratch a layer with f16 saved activations works in (its Saved fields of these names). */
export type PackedScratch = Readonly<Record<F16SavedKey | 'act', Tensor>>;

/** One buffer of a layer's Saved set: its key, shape and dtype (the plan and the allocation both use this). */
export interface SavedSpec {
  readonly key: Exclude<keyof Saved, 'u' | 'packed'> | `u.${Projection}` | `packed.${F16SavedKey}.${'y' | 'scale'}`;
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/**
 * The buffers of one Saved set. `save`: every buffer its own (the backward reads them);
 * otherwise hn2/rstd2 alias hn1/rstd1, one U serves every projection and x_mid is the residual
 * stream itself (not listed: the caller's x). `f16` (with `save`): the F16_SAVED activations as f16
 * with their row scales (Saved.packed) in place of f32, and no act; their f32 buffers come from a
 * PackedScratch (`packedScratchSpecs`, or a recomputed layers' shared set).
 */
export function savedSpecs(d: LayerDims, targets: readonly Projection[], r: number, opts: { save: boolean; lse: boolean; rows?: string; f16?: boolean }): SavedSpec[] {
  const { N, D, H, Hkv, Dh, F } = d;
  const n = opts.rows ?? 'N';
  const out: SavedSpec[] = [];
  const packs = opts.save && opts.f16 === true;
  const add = (key: Exclude<keyof Saved, 'u' | 'packed'> | `u.${Projection}`, name: string, shape: number[]): void => {
    if (packs && key === 'act') return;
    if (packs && (F16_SAVED as readonly string[]).includes(key)) {
      out.push({ key: `packed.${key as F16SavedKey}.y`, name: `${name} f16`, shape, dtype: 'f16' });
      out.push({ key: `packed.${key as F16SavedKey}.scale`, name: `${name.split(' (')[0]} row scales (${n})`, shape: [N], dtype: 'f32' });
      return;
    }
    out.push({ key, name, shape, dtype: 'f32' });
  };
  add('rstd1', `rstd1 (${n})`, [N]);
  if (opts.save) add('rstd2', `rstd2 (${n})`, [N]);
  add('hn1', `hn1 (${n}, D)`, [N, D]);
  if (opts.save) add('hn2', `hn2 (${n}, D)`, [N, D]);
  if (opts.save) add('xMid', `x_mid (${n}, D)`, [N, D]);
  add('q', `q (${n}, H·Dh)`, [N, H * Dh]);
  add('qn', `qn (${n}, H·Dh)`, [N, H * Dh]);
  add('k', `k (${n}, Hkv·Dh)`, [N, Hkv * Dh]);
  add('kn', `kn (${n}, Hkv·Dh)`, [N, Hkv * Dh]);
  add('v', `v (${n}, Hkv·Dh)`, [N, Hkv * Dh]);
  add('qRstd', `q rstd (${n}·H)`, [N * H]);
  add('kRstd', `k rstd (${n}·Hkv)`, [N * Hkv]);
  add('attn', `attn (${n}, H·Dh)`, [N, H * Dh]);
  if (opts.lse) add('lse', `attn lse (${n}, H)`, [N, H]);
  add('gate', `gate (${n}, F)`, [N, F]);
  add('up', `up (${n}, F)`, [N, F]);
  add('act', `act (${n}, F)`, [N, F]);
  if (opts.save) for (const p of targets) add(`u.${p}`, `lora u ${p} (${n}, R)`, [N, r]);
  else if (targets.length > 0) add(`u.${targets[0]}`, `lora u (${n}, R): x·Aᵀ scratch`, [N, r]);
  return out;
}

/** The f32 PackedScratch of layers saving activations in f16 where no recomputed layers' shared set provides one. */
export function packedScratchSpecs(d: LayerDims): { key: keyof PackedScratch; name: string; shape: number[] }[] {
  const { N, H, Hkv, Dh, F } = d;
  const width: Record<keyof PackedScratch, [number, string]> = { qn: [H * Dh, 'H·Dh'], kn: [Hkv * Dh, 'Hkv·Dh'], v: [Hkv * Dh, 'Hkv·Dh'], attn: [H * Dh, 'H·Dh'], gate: [F, 'F'], up: [F, 'F'], act: [F, 'F'] };
  return ([...F16_SAVED, 'act'] as const).map((key) => ({ key, name: `f16-saved scratch ${key} (N, ${width[key][1]})`, shape: [N, width[key][0]] }));
}

/**
 * Builds a Saved set from `savedSpecs`, allocating each buffer through `alloc`; `scratch` gives the
 * f32 buffers of the activations the specs keep in f16 (`f16`).
 */
export function allocSaved(specs: readonly SavedSpec[], targets: readonly Projection[], alloc: (spec: SavedSpec) => Tensor, x?: Tensor, scratch?: PackedScratch): Saved {
  const m = new Map<string, Tensor>();
  for (const s of specs) m.set(s.key, alloc(s));
  const get = (key: string, alias?: string | Tensor): Tensor => {
    const t = m.get(key) ?? (typeof alias === 'string' ? m.get(alias) : alias);
    if (!t) throw new Error(`decoder layer: no buffer for ${key}`);
    return t;
  };
  const shared = targets.length > 0 ? m.get(`u.${targets[0]}`) : undefined;
  const packed = m.has('packed.gate.y');
  if (packed && !scratch) throw new Error("decoder layer: a Saved set with f16 activations needs their f32 scratch (allocSaved's scratch)");
  const scratchOf = (key: keyof PackedScratch): Tensor | undefined => (packed ? scratch![key] : undefined);
  return {
    rstd1: get('rstd1'),
    rstd2: get('rstd2', 'rstd1'),
    hn1: get('hn1'),
    hn2: get('hn2', 'hn1'),
    xMid: get('xMid', x),
    q: get('q'),
    qn: get('qn', scratchOf('qn')),
    k: get('k'),
    kn: get('kn', scratchOf('kn')),
    v: get('v', scratchOf('v')),
    qRstd: get('qRstd'),
    kRstd: get('kRstd'),
    attn: get('attn', scratchOf('attn')),
    lse: m.get('lse'),
    gate: get('gate', scratchOf('gate')),
    up: get('up', scratchOf('up')),
    act: get('act', scratchOf('act')),
    u: Object.fromEntries(targets.map((p) => [p, m.get(`u.${p}`) ?? shared!])),
    ...(packed ? { packed: Object.fromEntries(F16_SAVED.map((key) => [key, { y: get(`packed.${key}.y`), scale: get(`packed.${key}.scale`) }])) as Record<F16SavedKey, F16Packed> } : {}),
  };
}

/** Gradient scratch of one layer's backward (reused by every layer). */
export interface LayerGradScratch {
  /** (N, D) residual-stream gradient: in dx_{l+1}, out dx_l */
  readonly dx: Tensor;
  readonly dhn: Tensor;
  readonly dAttn: Tensor;
  readonly dq: Tensor;
  readonly dqn: Tensor;
  readonly dk: Tensor;
  readonly dkn: Tensor;
  readonly dv: Tensor;
  /** (N, H) rowsum(dO ⊙ O); (N, H, 2) (lse·log2 e, rowsum) where the attention runs on tensor cores */
  readonly delta: Tensor;
  readonly dAct: Tensor;
  /** (N, R) LoRA down-projection gradient (present when anything is targeted) */
  readonly dU?: Tensor;
}

/** `sgmAttention`: the attention backward runs on tensor cores (its stats take delta's place, two floats a row). */
export function gradScratchSpecs(d: LayerDims, r: number | undefined, sgmAttention = false): { key: keyof LayerGradScratch; name: string; shape: number[] }[] {
  const { N, D, H, Hkv, Dh, F } = d;
  const specs: { key: keyof LayerGradScratch; name: string; shape: number[] }[] = [
    { key: 'dx', name: 'dx (N, D): residual gradient', shape: [N, D] },
    { key: 'dhn', name: 'dhn (N, D)', shape: [N, D] },
    { key: 'dAttn', name: 'd_attn (N, H·Dh)', shape: [N, H * Dh] },
    { key: 'dq', name: 'dq (N, H·Dh)', shape: [N, H * Dh] },
    { key: 'dqn', name: 'dqn (N, H·Dh)', shape: [N, H * Dh] },
    { key: 'dk', name: 'dk (N, Hkv·Dh)', shape: [N, Hkv * Dh] },
    { key: 'dkn', name: 'dkn (N, Hkv·Dh)', shape: [N, Hkv * Dh] },
    { key: 'dv', name: 'dv (N, Hkv·Dh)', shape: [N, Hkv * Dh] },
    sgmAttention ? { key: 'delta', name: 'attention stats (N, H, 2)', shape: [N, H, 2] } : { key: 'delta', name: 'attention delta (N, H)', shape: [N, H] },
    { key: 'dAct', name: 'd_act (N, F)', shape: [N, F] },
  ];
  if (r) specs.push({ key: 'dU', name: 'dU (N, R)', shape: [N, r] });
  return specs;
}

/** Attention of the layer: packed causal (training, evaluation) or over a KV cache (generation). */
export type LayerAttention =
  | { readonly kind: 'packed'; readonly B: number; readonly T: number; readonly segIds: Tensor }
  | {
      readonly kind: 'kv-cache';
      readonly kernel: AttentionDecode;
      /** (Hkv, maxContext, Dh) f32 each: this layer's cache. */
      readonly kCache: Tensor;
      readonly vCache: Tensor;
      /** (4) i32 [p0, n, −, −] */
      readonly chunk: Tensor;
      readonly oPart: Tensor;
      readonly mlPart: Tensor;
      readonly maxContext: number;
      readonly splits: number;
    };

export interface LayerKernels extends ModelKernels, ProjectionKernels {
  readonly attentionBackward?: AttentionBackward;
}

/** What is the same for every layer of one pass. */
export interface LayerPass {
  readonly kernels: LayerKernels;
  readonly dims: LayerDims;
  readonly rope: { readonly cos: Tensor; readonly sin: Tensor; readonly posIds: Tensor };
  /** (N) i32 0..N−1: the copy x_mid ← x_l when they are different buffers. */
  readonly identity?: Tensor;
  /** The projections' matrix kernel (default: the tiled matmul). */
  readonly linear?: LinearKernel;
  /**
   * (N) f32 row scales, reused for every input of a tensor-core matmul: given, the base projections
   * run on tensor cores (kernels.tensorCores; src/model/compute-path.ts): one row-scale dispatch
   * per distinct input (hn1, attn, hn2, act; each dy in the backward) before the matmuls reading it.
   */
  readonly rowScale?: Tensor;
  /**
   * Head scales of the attention operands (attentionScaleLayout): given, the packed attention and
   * its backward run on tensor cores (kernels.tensorCores.attention; compute-path.ts
   * attentionOnTensorCores), which write them before each use.
   */
  readonly attentionScales?: Tensor;
}

/** One layer: its weights and its seven projections as units; `label` prefixes its dispatch labels. */
export interface DecoderLayer {
  readonly label: string;
  readonly weights: LayerWeights;
  readonly proj: Readonly<Record<Projection, ProjectionUnit>>;
}

export function decoderLayer(
  label: string,
  weights: LayerWeights,
  adapter: { readonly layer: Partial<Record<Projection, LoraPair>>; readonly scale: number; readonly r: number } | undefined,
  grads?: Partial<Record<Projection, LoraPair>>,
  dropout?: (p: Projection) => ProjectionDropout | undefined,
): DecoderLayer {
  const proj = Object.fromEntries(
    PROJECTIONS.map((p) => {
      const pair = adapter?.layer[p];
      const unit: ProjectionUnit = {
        label: `${label} ${p}`,
        w: weights.proj[p],
        lora: pair && adapter ? { pair, scale: adapter.scale, r: adapter.r } : undefined,
        grad: pair ? grads?.[p] : undefined,
        dropout: pair ? dropout?.(p) : undefined,
      };
      return [p, unit];
    }),
  ) as Record<Projection, ProjectionUnit>;
  return { label, weights, proj };
}

/** The layers of a model with an optional adapter (`adapterOf` picks each layer's pairs). */
export function adapterLayer(adapter: LoraAdapter | undefined, l: number): Parameters<typeof decoderLayer>[2] {
  return adapter ? { layer: adapter.layers[l], scale: adapter.scale, r: adapter.config.r } : undefined;
}

export interface LayerForwardOptions {
  /** The layer input x_l (N, D). */
  readonly x: Tensor;
  /** Output x_{l+1} (N, D): x itself for the in-place residual (then s.xMid must be x too). */
  readonly out: Tensor;
  readonly saved: Saved;
  readonly attention: LayerAttention;
  /** Recompute before the backward: everything up to act, and down_proj's LoRA U; x_{l+1} is not rewritten. */
  readonly recompute?: boolean;
}

/** The f16 pack of `k`, for a layer saving activations in f16. */
function f16PackOf(k: LayerKernels, label: string): F16Pack {
  if (!k.f16Pack) throw new Error(`${label}: activations were planned as f16 but the kernels have no F16Pack (the device lacks shader-f16)`);
  return k.f16Pack;
}

/** The tensor-core attention of `k`, for a pass given attention head scales. */
function sgmAttention(k: LayerKernels, label: string): AttentionSgm {
  const a = k.tensorCores?.attention;
  if (!a) throw new Error(`${label}: attention head scales were planned but the kernels have no tensor-core attention (createTensorCoreKernels with headDim compiles it)`);
  return a;
}

export function layerForward(list: Dispatch[], pass: LayerPass, layer: DecoderLayer, o: LayerForwardOptions): void {
  const { kernels: k, dims, rope } = pass;
  const { N, D, H, Hkv, Dh, eps } = dims;
  const { x, saved: s, attention } = o;
  const lw = layer.weights;
  const L = layer.label;
  // the LoRA U of every targeted projection reading `input`, in one pass over it where the kernel allows
  const down = (ps: readonly Projection[], input: Tensor): Set<ProjectionUnit> =>
    projectionsDown(list, k, ps.map((p) => layer.proj[p]), input, ps.map((p) => s.u[p]), pass.linear);
  const proj = (p: Projection, y: Tensor, input: Tensor, accumulate: boolean, ready: Set<ProjectionUnit>): void =>
    projectionForward(list, k, layer.proj[p], { y, x: input, u: s.u[p], accumulate, uReady: ready.has(layer.proj[p]), rowScale: pass.rowScale }, pass.linear);
  // tensor cores: the row scales of `input`, once, before the projections reading it
  const scales = (name: string, input: Tensor): void => {
    if (pass.rowScale) projectionRowScale(list, k, `${L} ${name}`, input, pass.rowScale);
  };
  const copy = (label: string, dst: Tensor, src: Tensor): void => {
    if (dst === src) return;
    if (!pass.identity) throw new Error(`${label}: a copy of the residual stream needs the identity index`);
    list.push(k.gatherRows.forward(label, dst, src, pass.identity));
  };
  list.push(k.rmsnorm.forward(`${L} input_layernorm`, { y: s.hn1, rstd: s.rstd1, x, weight: lw.inputNorm }, { rows: N, width: D, eps }));
  const qkv = down(['q_proj', 'k_proj', 'v_proj'], s.hn1);
  scales('hn1', s.hn1);
  proj('q_proj', s.q, s.hn1, false, qkv);
  proj('k_proj', s.k, s.hn1, false, qkv);
  proj('v_proj', s.v, s.hn1, false, qkv);
  list.push(k.rmsnorm.forward(`${L} q_norm`, { y: s.qn, rstd: s.qRstd, x: s.q, weight: lw.qNorm }, { rows: N * H, width: Dh, eps }));
  list.push(k.rmsnorm.forward(`${L} k_norm`, { y: s.kn, rstd: s.kRstd, x: s.k, weight: lw.kNorm }, { rows: N * Hkv, width: Dh, eps }));
  list.push(k.rope.forward(`${L} rope`, { q: s.qn, k: s.kn, cos: rope.cos, sin: rope.sin, posIds: rope.posIds }, { N, H, Hkv }));
  if (attention.kind === 'packed') {
    if (!s.lse) throw new Error(`${L} attention: packed attention needs the lse buffer`);
    const t = { o: s.attn, lse: s.lse, q: s.qn, k: s.kn, v: s.v, segIds: attention.segIds };
    const ad = { B: attention.B, T: attention.T, H, Hkv, Dh };
    if (pass.attentionScales) list.push(...sgmAttention(k, L).forward(`${L} attention`, { ...t, scales: pass.attentionScales }, ad));
    else list.push(k.attention.forward(`${L} attention`, t, ad));
  } else {
    const a = attention;
    list.push(a.kernel.writeKv(`${L} kv write`, { kCache: a.kCache, vCache: a.vCache, k: s.kn, v: s.v, chunk: a.chunk }, { rows: N, Hkv, maxContext: a.maxContext }));
    list.push(
      ...a.kernel.forward(
        `${L} attention`,
        { o: s.attn, oPart: a.oPart, mlPart: a.mlPart, q: s.qn, kCache: a.kCache, vCache: a.vCache, chunk: a.chunk },
        { rows: N, H, Hkv, Dh, maxContext: a.maxContext, splits: a.splits },
      ),
    );
  }
  copy(`${L} x_mid ← x_l`, s.xMid, x);
  scales('attn', s.attn);
  proj('o_proj', s.xMid, s.attn, true, down(['o_proj'], s.attn));
  list.push(k.rmsnorm.forward(`${L} post_attention_layernorm`, { y: s.hn2, rstd: s.rstd2, x: s.xMid, weight: lw.postNorm }, { rows: N, width: D, eps }));
  const gateUp = down(['gate_proj', 'up_proj'], s.hn2);
  scales('hn2', s.hn2);
  proj('gate_proj', s.gate, s.hn2, false, gateUp);
  proj('up_proj', s.up, s.hn2, false, gateUp);
  list.push(k.swiglu.forward(`${L} swiglu`, s.act, s.gate, s.up));
  if (s.packed) {
    const pack = f16PackOf(k, L);
    for (const key of F16_SAVED) list.push(pack.pack(`${L} ${key} → f16`, s.packed[key], s[key]));
  }
  if (o.recompute) {
    if (down(['down_proj'], s.act).size === 0) projectionDown(list, k, layer.proj.down_proj, s.act, s.u.down_proj, pass.linear);
    return;
  }
  copy(`${L} x_out ← x_mid`, o.out, s.xMid);
  scales('act', s.act);
  proj('down_proj', o.out, s.act, true, down(['down_proj'], s.act));
}

export interface LayerBackwardOptions {
  /** The layer input x_l (kept). */
  readonly x: Tensor;
  readonly saved: Saved;
  readonly scratch: LayerGradScratch;
  /** (N) i32 segment ids and (B, T) of the packed attention. */
  readonly attention: Extract<LayerAttention, { kind: 'packed' }>;
}

/** The backward of `layerForward`: scratch.dx holds dx_{l+1} on entry and dx_l on exit; dA, dB added into the units' grads. */
export function layerBackward(list: Dispatch[], pass: LayerPass, layer: DecoderLayer, o: LayerBackwardOptions): void {
  const { kernels: k, dims, rope } = pass;
  const { N, D, H, Hkv, Dh } = dims;
  const { x, saved: s, scratch: g, attention } = o;
  if (!k.attentionBackward) throw new Error(`${layer.label}: the backward needs the attention-backward kernel`);
  const lw = layer.weights;
  const L = layer.label;
  const dU = g.dU ?? g.dhn; // only read for targeted projections, which have dU
  const back = (p: Projection, dX: Tensor, dy: Tensor, input: Tensor, accumulate: boolean): void =>
    projectionBackward(list, k, layer.proj[p], { dX, dy, x: input, u: s.u[p], dU, accumulate, rowScale: pass.rowScale });
  if (s.packed) {
    // the f16 copies into the shared f32 scratch, act recomputed from gate and up
    const pack = f16PackOf(k, L);
    for (const key of F16_SAVED) list.push(pack.unpack(`${L} ${key} ← f16`, s[key], s.packed[key]));
    list.push(k.swiglu.forward(`${L} swiglu (act for the backward)`, s.act, s.gate, s.up));
  }
  // MLP: x_{l+1} = x_mid + down(act)
  back('down_proj', g.dAct, g.dx, s.act, false);
  list.push(k.swiglu.backwardInPlace(`${L} swiglu backward`, { gate: s.gate, up: s.up, dact: g.dAct })); // gate ← dgate, up ← dup
  back('gate_proj', g.dhn, s.gate, s.hn2, false);
  back('up_proj', g.dhn, s.up, s.hn2, true);
  list.push(k.rmsnorm.backward(`${L} post_attention_layernorm backward`, { dx: g.dx, dy: g.dhn, x: s.xMid, weight: lw.postNorm, rstd: s.rstd2 }, { rows: N, width: D, accumulate: true }));
  // Attention: x_mid = x_l + o(attn)
  back('o_proj', g.dAttn, g.dx, s.attn, false);
  const at = { dq: g.dqn, dk: g.dkn, dv: g.dv, dO: g.dAttn, q: s.qn, k: s.kn, v: s.v, o: s.attn, lse: s.lse!, segIds: attention.segIds };
  const ad = { B: attention.B, T: attention.T, H, Hkv, Dh };
  if (pass.attentionScales) {
    const back = k.tensorCores?.attentionBackward;
    if (!back) throw new Error(`${L}: attention head scales were planned but the kernels have no tensor-core attention backward (withInputGradient compiles it)`);
    list.push(...back.backward(`${L} attention backward`, { ...at, stats: g.delta, scales: pass.attentionScales }, ad));
  } else {
    list.push(...k.attentionBackward.backward(`${L} attention backward`, { ...at, delta: g.delta }, ad));
  }
  list.push(k.rope.backward(`${L} rope backward`, { dq: g.dqn, dk: g.dkn, cos: rope.cos, sin: rope.sin, posIds: rope.posIds }, { N, H, Hkv }));
  list.push(k.rmsnorm.backward(`${L} q_norm backward`, { dx: g.dq, dy: g.dqn, x: s.q, weight: lw.qNorm, rstd: s.qRstd }, { rows: N * H, width: Dh, accumulate: false }));
  list.push(k.rmsnorm.backward(`${L} k_norm backward`, { dx: g.dk, dy: g.dkn, x: s.k, weight: lw.kNorm, rstd: s.kRstd }, { rows: N * Hkv, width: Dh, accumulate: false }));
  back('q_proj', g.dhn, g.dq, s.hn1, false);
  back('k_proj', g.dhn, g.dk, s.hn1, true);
  back('v_proj', g.dhn, g.dv, s.hn1, true);
  list.push(k.rmsnorm.backward(`${L} input_layernorm backward`, { dx: g.dx, dy: g.dhn, x, weight: lw.inputNorm, rstd: s.rstd1 }, { rows: N, width: D, accumulate: true }));
}
