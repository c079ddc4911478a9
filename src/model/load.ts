import type { Gpu } from '../kernels/gpu.js';
import type { LinearWeight } from '../kernels/matmul.js';
import { Nf4, NF4_BLOCK, DQ_BLOCK, type DoubleQuant } from '../kernels/nf4.js';
import { submitDispatches } from '../kernels/dispatch.js';
import { tensorView, type DType, type Tensor } from '../kernels/tensor.js';
import { f32ToBf16Array } from './bf16.js';
import { Checkpoint, PROJECTIONS, projectionPath, type Projection } from './checkpoint.js';
import type { TensorSource } from './tensor-source.js';
import { bytesToF32, DEFAULT_CHUNK_BYTES } from './safetensors.js';
import type { BaseFormat, LayerWeights, ModelWeights } from './weights.js';

export interface LoadOptions {
  /** 'nf4' (QLoRA, the default) or 'full' (the checkpoint's bf16 / f32 values). */
  readonly base?: BaseFormat;
  /** bitsandbytes' bnb_4bit_use_double_quant: 8-bit block scales (NF4 only). */
  readonly doubleQuant?: boolean;
  /** Bytes read from disk at a time (the host memory the load holds). Default 64 MiB. */
  readonly chunkBytes?: number;
  /** Called after each tensor. */
  readonly onTensor?: (name: string, done: number, total: number) => void;
}

/**
 * Loads a Hugging Face Qwen3 folder (or any TensorSource, e.g. random weights) onto the GPU, one tensor at a time through one reusable host
 * chunk (peak host memory ≈ chunkBytes plus a converted copy of one chunk for non-bf16 files):
 * norms and embedding as bf16 pairs; projections quantised to NF4 on the GPU (bf16 upload into a
 * staging buffer → nf4Quantize → packed codes + absmax), or kept full-precision (bf16 when the
 * file is bf16, else f32).
 */
export async function loadModelWeights(gpu: Gpu, from: string | TensorSource, options: LoadOptions = {}): Promise<ModelWeights> {
  const base = options.base ?? 'nf4';
  const doubleQuant = options.doubleQuant ?? false;
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const ckpt: TensorSource = typeof from === 'string' ? await Checkpoint.open(from) : from;
  try {
    const c = ckpt.config;
    const nf4 = base === 'nf4' ? await Nf4.create(gpu) : undefined;
    const total = ckpt.names().length;
    let done = 0;
    let bytes = 0;
    const chunk = new Uint8Array(chunkBytes);
    const tick = (name: string): void => {
      done++;
      options.onTensor?.(name, done, total);
    };
    const own = (t: Tensor): Tensor => {
      bytes += t.buffer.size;
      return t;
    };

    /** Streams tensor `name` into `dst` as bf16 pairs (dtype bf16x2) or f32. */
    const stream = async (name: string, dst: Tensor): Promise<void> => {
      const info = ckpt.info(name);
      for await (const { offset, bytes: piece } of ckpt.readChunks(name, chunkBytes, chunk)) {
        if (dst.dtype === 'bf16x2' && info.dtype === 'BF16') {
          gpu.write(dst, piece, offset);
        } else {
          const itemBytes = info.dtype === 'F32' ? 4 : 2;
          const values = bytesToF32(piece, info.dtype, `${ckpt.dir}: ${name}`);
          const at = (offset / itemBytes) * (dst.dtype === 'f32' ? 4 : 2);
          gpu.write(dst, dst.dtype === 'f32' ? values : f32ToBf16Array(values), at);
        }
      }
    };
    const bf16Tensor = async (name: string): Promise<Tensor> => {
      const t = own(gpu.tensor(name, ckpt.info(name).shape, 'bf16x2'));
      await stream(name, t);
      tick(name);
      return t;
    };

    // One staging buffer for the largest projection, in the format the quantiser reads.
    const stagingDtype: DType = ckpt.info(`${projectionPath(0, 'q_proj')}.weight`).dtype === 'BF16' ? 'bf16x2' : 'f32';
    let staging: GPUBuffer | undefined;
    if (nf4) {
      let largest = 0;
      for (const p of PROJECTIONS) {
        const [o, i] = ckpt.info(`${projectionPath(0, p)}.weight`).shape;
        largest = Math.max(largest, o * i);
      }
      staging = gpu.buffer('nf4 staging', (stagingDtype === 'f32' ? 4 : 2) * largest);
    }

    const projection = async (l: number, p: Projection): Promise<LinearWeight> => {
      const name = `${projectionPath(l, p)}.weight`;
      const info = ckpt.info(name);
      const [nOut, k] = info.shape;
      if (!nf4 || !staging) {
        const dtype: DType = info.dtype === 'BF16' ? 'bf16x2' : 'f32';
        const data = own(gpu.tensor(name, [nOut, k], dtype));
        await stream(name, data);
        tick(name);
        return { format: dtype === 'bf16x2' ? 'bf16' : 'f32', nOut, k, data };
      }
      const src = tensorView(staging, `${name} (staging)`, [nOut, k], stagingDtype);
      await stream(name, src);
      const packed = own(gpu.tensor(`${name} nf4`, [nOut, k], 'nf4x8'));
      const blocks = (nOut * k) / NF4_BLOCK;
      const absmax = gpu.tensor(`${name} absmax`, [blocks], 'f32');
      submitDispatches(gpu, [nf4.quantize(`quantize ${name}`, { packed, absmax, weight: src })]);
      let dq: DoubleQuant | undefined;
      if (doubleQuant) {
        const codes = own(gpu.tensor(`${name} absmax codes`, [blocks], 'u8x4'));
        const absmax2 = own(gpu.tensor(`${name} absmax2`, [Math.ceil(blocks / DQ_BLOCK)], 'f32'));
        const offset = gpu.tensor(`${name} absmax offset`, [1], 'f32');
        submitDispatches(gpu, nf4.doubleQuantize(`double-quantize ${name}`, { codes, absmax2, offset, absmax }));
        dq = { codes, absmax2, offset: (await gpu.readF32(offset))[0] };
        offset.buffer.destroy();
        absmax.buffer.destroy();
      } else {
        own(absmax);
        // Bounds the queue's pending uploads to about one projection.
        await gpu.sync();
      }
      tick(name);
      return dq ? { format: 'nf4', nOut, k, data: packed, doubleQuant: dq } : { format: 'nf4', nOut, k, data: packed, absmax };
    };

    const embed = await bf16Tensor('model.embed_tokens.weight');
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const prefix = `model.layers.${l}`;
      const proj = {} as Record<Projection, LinearWeight>;
      for (const p of PROJECTIONS) proj[p] = await projection(l, p);
      layers.push(
        Object.freeze({
          inputNorm: await bf16Tensor(`${prefix}.input_layernorm.weight`),
          postNorm: await bf16Tensor(`${prefix}.post_attention_layernorm.weight`),
          qNorm: await bf16Tensor(`${prefix}.self_attn.q_norm.weight`),
          kNorm: await bf16Tensor(`${prefix}.self_attn.k_norm.weight`),
          proj: Object.freeze(proj),
        }),
      );
    }
    const finalNorm = await bf16Tensor('model.norm.weight');
    const lmHeadData = c.tieWordEmbeddings ? embed : await bf16Tensor('lm_head.weight');
    staging?.destroy();
    await gpu.sync();
    return Object.freeze({
      config: c,
      base,
      doubleQuant: base === 'nf4' && doubleQuant,
      embed,
      finalNorm,
      lmHead: { format: 'bf16', nOut: c.vocabSize, k: c.hiddenSize, data: lmHeadData } as LinearWeight,
      layers: Object.freeze(layers),
      bytes,
    });
  } finally {
    await ckpt.close();
  }
}
