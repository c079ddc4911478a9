import { ShapeError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import type { Dispatch } from './dispatch.js';
import { quantileSearch } from './quantile-search.js';
import { foldGrid } from './grid.js';

/**
 * NF4 (bitsandbytes' 4-bit NormalFloat, as QLoRA uses it) on the GPU, bit-exact with bitsandbytes'
 * CUDA kernels, plus bitsandbytes' double quantisation of the block scales.
 *
 * Quantisation rule (bitsandbytes kQuantizeBlockwise<NF4>, blocksize 64): absmax = max |x| over
 * the block; s = x · rn(1/absmax) in f32; code = the number of the 15 f32 thresholds below that
 * are strictly less than s (dQuantizeNF4's tree is a monotone search over them). The fixture
 * (qwen3-tiny `nf4.*`) is reproduced byte for byte by this rule; it would be by x/absmax and by
 * `>=` too (none of its 3072 values falls between those rules), so the rule is taken from the
 * CUDA source, not inferred from the fixture. A block of absmax < 2^-126 (all zero) gets code 0
 * (value −0) everywhere, as bitsandbytes' 0·(1/0) = NaN falls through every test to code 0.
 */
export const NF4_BLOCK = 64;
/** Block scales per double-quantisation chunk (bitsandbytes quantize_blockwise(absmax, blocksize=256)). */
export const DQ_BLOCK = 256;

/** bitsandbytes' NF4 codebook (index = 4-bit code), as the f32 values its lookup table holds. */
export const NF4_CODEBOOK: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

/** dQuantizeNF4's decision thresholds (midpoints between codebook entries), ascending, as f32. */
export const NF4_THRESHOLDS: readonly number[] = [
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984,
  -0.13791173323988914, -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668,
  0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
].map(Math.fround);

const MIN_NORMAL = 2 ** -126;

/** torch.linspace(start, end, steps) in float32 (ATen's scalar CPU path: halves from each end). */
function linspaceF32(start: number, end: number, steps: number): number[] {
  const s = Math.fround(start);
  const e = Math.fround(end);
  const step = Math.fround(Math.fround(e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    out.push(i < half ? Math.fround(s + Math.fround(step * i)) : Math.fround(e - Math.fround(step * (steps - i - 1))));
  }
  return out;
}

/**
 * bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: 256 ascending
 * f32 values in [−0.993, 1] (127 negative, 0, 127 positive, 1). For exponent i = 0..6 it takes the
 * 2^i midpoints of linspace(0.1, 1, 2^i + 1), times 10^(i−6), with both signs. Computed in f32 as
 * torch does; torch's vectorised linspace may round a boundary differently by an ulp, which only
 * matters for exchanging double-quantised files with bitsandbytes (this project never does).
 */
export function dynamicMap(): Float32Array {
  const tens = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
  const data: number[] = [0, 1];
  for (let i = 0; i < 7; i++) {
    const b = linspaceF32(0.1, 1, 2 ** i + 1);
    const scale = Math.fround(tens[i]);
    for (let j = 0; j + 1 < b.length; j++) {
      const v = Math.fround(scale * Math.fround(Math.fround(b[j] + b[j + 1]) / 2));
      data.push(v, -v);
    }
  }
  return Float32Array.from(data.sort((a, b) => a - b));
}

function checkBlocks(where: string, count: number): void {
  if (count % NF4_BLOCK !== 0 || count === 0) {
    throw new ShapeError(
      `${where}: NF4 needs a weight of a positive multiple of ${NF4_BLOCK} elements (blocks of ${NF4_BLOCK} over the flattened ` +
        `weight), got ${count}; keep this tensor in bf16 instead.`,
    );
  }
}

/**
 * Reference NF4 quantisation of a weight given as f32 values (bf16 weights widened exactly).
 * Bit-exact by construction: every f32 rounding of bitsandbytes' kernel is made explicit.
 * Returns bitsandbytes' packed bytes (element 2i in the high nibble of byte i) and the absmax.
 */
export function nf4QuantizeRef(w: Float32Array): { packed: Uint8Array; absmax: Float32Array } {
  checkBlocks('nf4QuantizeRef', w.length);
  const blocks = w.length / NF4_BLOCK;
  const packed = new Uint8Array(w.length / 2);
  const absmax = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let m = 0;
    for (let i = 0; i < NF4_BLOCK; i++) m = Math.max(m, Math.abs(w[b * NF4_BLOCK + i]));
    absmax[b] = m;
    if (m < MIN_NORMAL) continue; // codes 0, as bitsandbytes' NaN path
    const r = Math.fround(1 / m); // f64 division rounded once more to f32 is the correctly rounded f32 quotient
    for (let i = 0; i < NF4_BLOCK; i++) {
      const e = b * NF4_BLOCK + i;
      const s = Math.fround(w[e] * r);
      let code = 0;
      for (const t of NF4_THRESHOLDS) if (s > t) code++;
      packed[e >> 1] |= (e & 1) === 0 ? code << 4 : code;
    }
  }
  return { packed, absmax };
}

/** Reference dequantisation: value = codebook[code] · absmax, in float64. */
export function nf4DequantizeRef(packed: Uint8Array, absmax: ArrayLike<number>, count: number): Float64Array {
  checkBlocks('nf4DequantizeRef', count);
  const out = new Float64Array(count);
  for (let e = 0; e < count; e++) {
    const byte = packed[e >> 1];
    out[e] = NF4_CODEBOOK[(e & 1) === 0 ? byte >> 4 : byte & 15] * absmax[e >> 6];
  }
  return out;
}

/** The double-quantised form of NF4 block scales, as the host sees it. */
export interface DoubleQuantRef {
  /** One u8 code per block scale. */
  codes: Uint8Array;
  /** One f32 scale per chunk of 256 block scales. */
  absmax2: Float32Array;
  offset: number;
}

/**
 * Reference double quantisation (bitsandbytes quantize_4bit(compress_statistics=True)):
 * offset = mean(absmax) (float64 mean rounded to f32 unless given, e.g. the GPU's), then
 * quantize_blockwise(absmax − offset, blocksize 256) with the signed dynamic map, every f32
 * rounding of the kernel made explicit (bit-exact given the same offset).
 */
export function nf4DoubleQuantizeRef(absmax: Float32Array, offset?: number): DoubleQuantRef {
  let sum = 0;
  for (const a of absmax) sum += a;
  const off = offset ?? Math.fround(sum / absmax.length);
  const map = dynamicMap();
  const chunks = Math.ceil(absmax.length / DQ_BLOCK);
  const codes = new Uint8Array(absmax.length);
  const absmax2 = new Float32Array(chunks);
  for (let c = 0; c < chunks; c++) {
    const end = Math.min(absmax.length, (c + 1) * DQ_BLOCK);
    let m = 0;
    for (let i = c * DQ_BLOCK; i < end; i++) m = Math.max(m, Math.abs(Math.fround(absmax[i] - off)));
    absmax2[c] = m;
    if (m < MIN_NORMAL) continue;
    const r = Math.fround(1 / m);
    for (let i = c * DQ_BLOCK; i < end; i++) codes[i] = dQuantizeRef(map, Math.fround(Math.fround(absmax[i] - off) * r));
  }
  return { codes, absmax2, offset: off };
}

/** bitsandbytes' dQuantize<0>: the quantile search from −1 with the map's ends as outer brackets. */
function dQuantizeRef(map: Float32Array, x: number): number {
  return quantileSearch(map, x, -1, true);
}

/** Reference dequantisation of double-quantised scales: f32(f32(map[code] · absmax2) + offset). */
export function nf4DoubleDequantizeRef(dq: DoubleQuantRef): Float32Array {
  const map = dynamicMap();
  const out = new Float32Array(dq.codes.length);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(Math.fround(map[dq.codes[i]] * dq.absmax2[i >> 8]) + dq.offset);
  return out;
}

/** Double-quantised NF4 block scales on the GPU (what LinearWeight.doubleQuant holds). */
export interface DoubleQuant {
  /** (nblocks) u8x4 codes into the dynamic map. */
  readonly codes: Tensor;
  /** (ceil(nblocks / 256)) f32 chunk scales. */
  readonly absmax2: Tensor;
  /** mean of the original scales, added back on dequantisation. */
  readonly offset: number;
}

export const Nf4QuantizeParams = defineParams('Nf4QuantizeParams', [['numel', 'u32']] as const);
export const Nf4DequantizeParams = defineParams('Nf4DequantizeParams', [['numel', 'u32'], ['offset', 'f32']] as const);
export const Nf4DoubleQuantizeMeanParams = defineParams('Nf4DoubleQuantizeMeanParams', [['count', 'u32']] as const);
export const Nf4DoubleQuantizeParams = defineParams('Nf4DoubleQuantizeParams', [['count', 'u32']] as const);

export const nf4QuantizeSpec: KernelSpec<typeof Nf4QuantizeParams> = {
  file: 'nf4_quantize.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'packed', access: 'read_write' },
    { name: 'absmax', access: 'read_write' },
    { name: 'weight', access: 'read' },
  ],
  params: Nf4QuantizeParams,
};

export const nf4DequantizeSpec: KernelSpec<typeof Nf4DequantizeParams> = {
  file: 'nf4_dequantize.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'out', access: 'read_write' },
    { name: 'packed', access: 'read' },
    { name: 'absmax', access: 'read' },
    { name: 'absmax2', access: 'read' },
    { name: 'qmap', access: 'read' },
  ],
  params: Nf4DequantizeParams,
};

export const nf4DoubleQuantizeMeanSpec: KernelSpec<typeof Nf4DoubleQuantizeMeanParams> = {
  file: 'nf4_double_quantize_mean.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'offset', access: 'read_write' },
    { name: 'absmax', access: 'read' },
  ],
  params: Nf4DoubleQuantizeMeanParams,
};

export const nf4DoubleQuantizeSpec: KernelSpec<typeof Nf4DoubleQuantizeParams> = {
  file: 'nf4_double_quantize.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'codes', access: 'read_write' },
    { name: 'absmax2', access: 'read_write' },
    { name: 'absmax', access: 'read' },
    { name: 'offset', access: 'read' },
    { name: 'qmap', access: 'read' },
  ],
  params: Nf4DoubleQuantizeParams,
};

const WG = 256;

/** Workgroups for `count` items of `perGroup` each, folded into 2D past the 65535 limit (foldGrid). */
function grid(count: number, perGroup: number): [number, number] {
  const g = Math.max(1, Math.ceil(count / perGroup));
  return foldGrid(g);
}

/** The dynamic map (256 f32) as a GPU tensor; shared by the double-quantisation and matmul kernels. */
export function dynamicMapTensor(gpu: Gpu): Tensor {
  return gpu.tensorFrom('nf4 dynamic map', [256], 'f32', dynamicMap());
}

/** NF4 quantisation, dequantisation and double quantisation kernels (pipelines built once). */
export class Nf4 {
  private constructor(
    private readonly quantizeBf16: Kernel<typeof Nf4QuantizeParams>,
    private readonly quantizeF32: Kernel<typeof Nf4QuantizeParams>,
    private readonly dequantizePlain: Kernel<typeof Nf4DequantizeParams>,
    private readonly dequantizeDouble: Kernel<typeof Nf4DequantizeParams>,
    private readonly meanKernel: Kernel<typeof Nf4DoubleQuantizeMeanParams>,
    private readonly doubleKernel: Kernel<typeof Nf4DoubleQuantizeParams>,
    /** (256) f32 bitsandbytes' signed dynamic map. */
    readonly qmap: Tensor,
  ) {}

  static async create(gpu: Gpu): Promise<Nf4> {
    return new Nf4(
      await Kernel.create(gpu, nf4QuantizeSpec, { WG, INPUT_F32: false }),
      await Kernel.create(gpu, nf4QuantizeSpec, { WG, INPUT_F32: true }),
      await Kernel.create(gpu, nf4DequantizeSpec, { WG, DOUBLE_QUANT: false }),
      await Kernel.create(gpu, nf4DequantizeSpec, { WG, DOUBLE_QUANT: true }),
      await Kernel.create(gpu, nf4DoubleQuantizeMeanSpec, { WG }),
      await Kernel.create(gpu, nf4DoubleQuantizeSpec),
      dynamicMapTensor(gpu),
    );
  }

  /**
   * packed (numel) nf4x8 and absmax (numel / 64) f32 ← NF4 of `weight` (any shape, bf16x2 or f32,
   * numel a multiple of 64).
   */
  quantize(label: string, t: { packed: Tensor; absmax: Tensor; weight: Tensor }): Dispatch {
    const count = numel(t.weight.shape);
    checkBlocks(`${label}: ${t.weight.label}`, count);
    if (t.weight.dtype !== 'bf16x2' && t.weight.dtype !== 'f32') {
      throw new ShapeError(`${label}: ${t.weight.label} has dtype ${t.weight.dtype}, expected bf16x2 or f32`);
    }
    expectTensor(label, t.packed, t.weight.shape, 'nf4x8');
    expectTensor(label, t.absmax, [count / NF4_BLOCK], 'f32');
    const kernel = t.weight.dtype === 'f32' ? this.quantizeF32 : this.quantizeBf16;
    return kernel.bind(label, t, { numel: count }, grid(count / 8, WG));
  }

  /** out (numel) f32 ← dequantised NF4 (with double-quantised scales when `doubleQuant` is given). */
  dequantize(label: string, t: { out: Tensor; packed: Tensor; absmax?: Tensor; doubleQuant?: DoubleQuant }): Dispatch {
    const count = numel(t.packed.shape);
    checkBlocks(`${label}: ${t.packed.label}`, count);
    expectTensor(label, t.out, t.packed.shape, 'f32');
    expectTensor(label, t.packed, t.packed.shape, 'nf4x8');
    const blocks = count / NF4_BLOCK;
    if (t.doubleQuant) {
      const dq = t.doubleQuant;
      expectDoubleQuant(label, dq, blocks);
      return this.dequantizeDouble.bind(
        label,
        { out: t.out, packed: t.packed, absmax: dq.codes, absmax2: dq.absmax2, qmap: this.qmap },
        { numel: count, offset: dq.offset },
        grid(count / 8, WG),
      );
    }
    if (!t.absmax) throw new ShapeError(`${label}: NF4 dequantisation needs absmax or doubleQuant`);
    expectTensor(label, t.absmax, [blocks], 'f32');
    return this.dequantizePlain.bind(
      label,
      { out: t.out, packed: t.packed, absmax: t.absmax, absmax2: this.qmap, qmap: this.qmap },
      { numel: count, offset: 0 },
      grid(count / 8, WG),
    );
  }

  /**
   * Double quantisation of `absmax` (nblocks) f32: offset (1) f32 ← mean, then codes (nblocks)
   * u8x4 and absmax2 (ceil(nblocks / 256)) f32. Two dispatches, to be recorded in this order; read
   * `offset` back once (at load time) to build the DoubleQuant a matmul takes.
   */
  doubleQuantize(label: string, t: { codes: Tensor; absmax2: Tensor; offset: Tensor; absmax: Tensor }): Dispatch[] {
    const count = numel(t.absmax.shape);
    expectTensor(label, t.absmax, [count], 'f32');
    expectTensor(label, t.codes, [count], 'u8x4');
    expectTensor(label, t.absmax2, [Math.ceil(count / DQ_BLOCK)], 'f32');
    expectTensor(label, t.offset, [1], 'f32');
    return [
      this.meanKernel.bind(`${label} (mean)`, { offset: t.offset, absmax: t.absmax }, { count }, [1]),
      this.doubleKernel.bind(label, { ...t, qmap: this.qmap }, { count }, grid(count, DQ_BLOCK)),
    ];
  }
}

/** Checks a DoubleQuant's tensors against a weight of `blocks` NF4 blocks. */
export function expectDoubleQuant(where: string, dq: DoubleQuant, blocks: number): void {
  expectTensor(where, dq.codes, [blocks], 'u8x4');
  expectTensor(where, dq.absmax2, [Math.ceil(blocks / DQ_BLOCK)], 'f32');
  if (!Number.isFinite(dq.offset)) throw new ShapeError(`${where}: double-quantisation offset ${dq.offset} is not finite`);
}
