import { ConfigError } from '../errors.js';
import type { Dispatch } from './dispatch.js';
import type { Gpu } from './gpu.js';
import { groups, Kernel, type KernelSpec } from './kernel.js';
import { defineParams } from './params.js';
import { expectTensor, numel, type Tensor } from './tensor.js';
import { foldGrid } from './grid.js';

/**
 * Inverted dropout on the LoRA input (as PEFT's lora_dropout): a mask regenerated from
 * (seed, salt, index) by hashing, so neither forward nor backward stores it. See dropout_forward.wgsl.
 */
export const DropoutParams = defineParams('DropoutParams', [
  ['count', 'u32'],
  ['threshold', 'u32'],
  ['scale', 'f32'],
  ['salt', 'u32'],
] as const);

export const dropoutForwardSpec: KernelSpec<typeof DropoutParams> = {
  file: 'dropout_forward.wgsl',
  bindings: [
    { name: 'params', access: 'uniform' },
    { name: 'out', access: 'read_write' },
    { name: 'x', access: 'read' },
    { name: 'seed', access: 'read' },
  ],
  params: DropoutParams,
};

const WG = 256;

/** keep threshold and scale of dropout probability p. */
export function dropoutConstants(p: number): { threshold: number; scale: number } {
  if (!(p >= 0 && p < 1)) throw new ConfigError(`lora_dropout must be in [0, 1), got ${p}`);
  return { threshold: Math.min(0xffffffff, Math.round(p * 2 ** 32)), scale: 1 / (1 - p) };
}

export class Dropout {
  private constructor(
    private readonly write: Kernel<typeof DropoutParams>,
    private readonly add: Kernel<typeof DropoutParams>,
  ) {}

  static async create(gpu: Gpu): Promise<Dropout> {
    return new Dropout(await Kernel.create(gpu, dropoutForwardSpec, { WG, ACCUMULATE: false }), await Kernel.create(gpu, dropoutForwardSpec, { WG, ACCUMULATE: true }));
  }

  /** out (=|+=) dropout_p(x) with the mask of (seed[0], salt); out and x of the same shape, f32. */
  forward(label: string, t: { out: Tensor; x: Tensor; seed: Tensor }, o: { p: number; salt: number; accumulate: boolean }): Dispatch {
    expectTensor(label, t.x, t.out.shape, 'f32');
    expectTensor(label, t.out, t.x.shape, 'f32');
    expectTensor(label, t.seed, [1], 'u32');
    const count = numel(t.x.shape);
    const g = groups(count, WG);
    const { threshold, scale } = dropoutConstants(o.p);
    return (o.accumulate ? this.add : this.write).bind(label, t, { count, threshold, scale, salt: o.salt >>> 0 }, foldGrid(g));
  }
}

/** The same hash as the shader (u32 arithmetic). */
function pcg(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** float64 reference: (prior +) x·keep/(1 − p). */
export function dropoutRef(x: ArrayLike<number>, p: number, seed: number, salt: number, prior?: ArrayLike<number>): Float64Array {
  const { threshold, scale } = dropoutConstants(p);
  const out = new Float64Array(x.length);
  const s = pcg(seed >>> 0);
  for (let i = 0; i < x.length; i++) {
    const h = pcg((pcg((s ^ salt) >>> 0) ^ i) >>> 0);
    out[i] = (prior ? prior[i] : 0) + (h >= threshold ? x[i] * Math.fround(scale) : 0);
  }
  return out;
}
