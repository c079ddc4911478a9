import { ShapeError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { Kernel, type KernelSpec } from './kernel.js';
import { checkLoraEpilogue, checkWeight, FORMAT_CODE, type LinearWeight, type LoraEpilogue, type StoredFormat, WEIGHT_BINDING_SPECS, weightBindings } from './matmul.js';
import { dynamicMapTensor } from './nf4.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import { GRID_FOLD } from './grid.js';

/**
 * Dequant matrix-vector product for generation's one-token steps: Y (M, Nout) [+]= X (M, K) ·
 * dequant(W)ᵀ [+ scale · U · Bᵀ] for a fixed handful of rows M (shaders/matvec_forward.wgsl). The
 * same operation and weight formats as `Matmul.forward`; where the tiled matmul would compute a
 * whole tile of 64–128 rows to use one (64–128× the arithmetic: estimated ~25 ms per token at
 * Qwen3-4B on an H100), this kernel reads each weight once, up to 32 threads per output column,
 * and is bound by memory bandwidth. K must be a multiple of 8 (`supports`); callers fall back to Matmul otherwise.
 */
export const MatvecParams = defineParams('MatvecParams', [
  ['m', 'u32'],
  ['n', 'u32'],
  ['k', 'u32'],
  ['r', 'u32'],
  ['scale', 'f32'],
  ['offset', 'f32'],
  ['lanes', 'u32'],
] as const);

export const matvecForwardSpec: KernelSpec<typeof MatvecParams> = {
  file: 'matvec_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'y', access: 'read_write' },
    { name: 'x', access: 'read' },
    ...WEIGHT_BINDING_SPECS,
  ],
  params: MatvecParams,
};

/** Threads per workgroup (the shader's WG). */
const WG = 256;

/**
 * Threads per output column for rows of K: one per 64 elements, a power of two from 1 to 32
 * (K = 2560 → 32; the fixture's K = 32 → 1, no reduction). Idle lanes are free on a GPU but not on
 * a CPU adapter, where the embedded model's 151,936 × 32 lm_head took 1.2 s per token with 32.
 */
export function matvecLanes(k: number): number {
  return Math.min(32, 2 ** Math.floor(Math.log2(Math.max(1, k / 64))));
}
/** The shader's MAXM: most rows one pipeline takes. */
export const MATVEC_MAX_ROWS = 8;

export interface MatvecCall {
  /** (M, nOut) f32 output; read too when `accumulate`. */
  readonly y: Tensor;
  /** (M, k) f32 input. */
  readonly x: Tensor;
  readonly w: LinearWeight;
  readonly accumulate?: boolean;
  readonly lora?: LoraEpilogue;
}

export class Matvec {
  private constructor(
    readonly rows: number,
    private readonly kernels: ReadonlyMap<string, Kernel<typeof MatvecParams>>,
    private readonly qmap: Tensor,
    private readonly unused: Tensor,
  ) {}

  /** Compiles the variants (format × accumulate × LoRA) for `formats`, each for exactly `rows` rows. */
  static async create(gpu: Gpu, options: { rows: number; formats: readonly StoredFormat[] }): Promise<Matvec> {
    const { rows, formats } = options;
    if (!Number.isInteger(rows) || rows < 1 || rows > MATVEC_MAX_ROWS) throw new ShapeError(`Matvec: rows must be 1 to ${MATVEC_MAX_ROWS}, got ${rows}`);
    const kernels = new Map<string, Kernel<typeof MatvecParams>>();
    for (const format of new Set(formats)) {
      for (const accumulate of [false, true]) {
        for (const lora of [false, true]) {
          const constants = { ROWS: rows, WG, FORMAT: FORMAT_CODE[format], ACCUMULATE: accumulate, LORA: lora };
          kernels.set(variantKey(format, accumulate, lora), await Kernel.create(gpu, matvecForwardSpec, constants));
        }
      }
    }
    return new Matvec(rows, kernels, dynamicMapTensor(gpu), gpu.tensor('matvec unused binding', [4], 'f32'));
  }

  /** Whether `forward` takes this weight: K a multiple of 8 and its format compiled. */
  supports(w: LinearWeight): boolean {
    return w.k % 8 === 0 && this.kernels.has(variantKey(checkWeight('matvec', w), false, false));
  }

  /** Records Y (M, nOut) [+]= X · dequant(W)ᵀ [+ scale · U · Bᵀ] with M = `rows`. */
  forward(label: string, call: MatvecCall): Dispatch {
    const { y, x, w, lora } = call;
    const accumulate = call.accumulate ?? false;
    const where = `${label} (matvec ${w.nOut}×${w.k} ${w.format})`;
    const m = this.rows;
    expectTensor(where, x, [...x.shape.slice(0, -1), w.k], 'f32');
    expectTensor(where, y, [...y.shape.slice(0, -1), w.nOut], 'f32');
    if (numel(x.shape) !== m * w.k || numel(y.shape) !== m * w.nOut) {
      throw new ShapeError(`${where}: x [${x.shape.join(', ')}] and y [${y.shape.join(', ')}] must have the ${m} rows this kernel was compiled for`);
    }
    if (w.k % 8 !== 0) throw new ShapeError(`${where}: K = ${w.k} is not a multiple of 8; use Matmul.forward`);
    const stored = checkWeight(where, w);
    const r = checkLoraEpilogue(where, lora, m, w.nOut);
    const kernel = this.kernels.get(variantKey(stored, accumulate, lora !== undefined));
    if (!kernel) throw new ShapeError(`${where}: weight format ${stored} was not compiled; pass it to Matvec.create`);
    const scales = stored === 'nf4dq' ? w.doubleQuant! : undefined;
    const lanes = matvecLanes(w.k);
    const g = Math.ceil(w.nOut / (WG / lanes));
    const gy = Math.ceil(g / GRID_FOLD);
    return kernel.bind(
      where,
      { y, x, ...weightBindings(stored, w, lora, this.qmap, this.unused) },
      { m, n: w.nOut, k: w.k, r, scale: lora?.scale ?? 0, offset: scales?.offset ?? 0, lanes },
      [Math.ceil(g / gy), gy],
    );
  }
}

function variantKey(format: StoredFormat, accumulate: boolean, lora: boolean): string {
  return `${format}|${accumulate ? 'acc' : 'set'}|${lora ? 'lora' : 'plain'}`;
}
