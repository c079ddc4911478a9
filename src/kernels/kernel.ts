import { ShaderError, ShapeError, DeviceLimitError } from '../errors.js';
import type { Gpu } from './gpu.js';
import { packParams, type ParamsLayout } from './params.js';
import { readShader } from './shader.js';
import type { Tensor } from './tensor.js';
import { BufferUsage, ShaderStage } from './usage.js';
import type { Dispatch } from './dispatch.js';

/**
 * How a kernel's bindings look. The list order is the `@binding(i)` order of `@group(0)` in the
 * WGSL file; a test (tests/kernels/layouts.test.ts) parses every shader and checks names, access
 * modes and the params struct against these specs.
 */
export interface BindingSpec {
  readonly name: string;
  /** 'uniform' is the params struct; 'read' is var<storage, read>; 'read_write' var<storage, read_write>. */
  readonly access: 'uniform' | 'read' | 'read_write';
}

export interface KernelSpec<L extends ParamsLayout = ParamsLayout> {
  /** File under shaders/. */
  readonly file: string;
  readonly entry?: string;
  readonly bindings: readonly BindingSpec[];
  /** Layout of the binding named 'params' (access 'uniform'). */
  readonly params: L;
}

/** Storage buffers a kernel binds (its need of maxStorageBuffersPerShaderStage). */
export function storageBufferCount(spec: Pick<KernelSpec, 'bindings'>): number {
  return spec.bindings.filter((b) => b.access !== 'uniform').length;
}

export type OverrideConstants = Record<string, number | boolean>;

type FieldsOf<L> = L extends ParamsLayout<infer F> ? F : never;

/**
 * A compiled pipeline with its explicit bind-group layout. `bind` makes a reusable Dispatch: it
 * allocates a small uniform buffer and a bind group, so call it while building a program, never
 * inside a training step.
 */
export class Kernel<L extends ParamsLayout = ParamsLayout> {
  private constructor(
    private readonly gpu: Gpu,
    readonly spec: KernelSpec<L>,
    readonly name: string,
    readonly pipeline: GPUComputePipeline,
    private readonly layout: GPUBindGroupLayout,
  ) {}

  /** Compiles shaders/<spec.file> with `constants`; compile or validation errors name the file. */
  static create<L extends ParamsLayout>(gpu: Gpu, spec: KernelSpec<L>, constants: OverrideConstants = {}): Promise<Kernel<L>> {
    return gpu.oneAtATime(() => Kernel.compile(gpu, spec, constants));
  }

  private static async compile<L extends ParamsLayout>(gpu: Gpu, spec: KernelSpec<L>, constants: OverrideConstants): Promise<Kernel<L>> {
    const code = readShader(spec.file);
    const device = gpu.device;
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ label: spec.file, code });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length > 0) {
      await device.popErrorScope();
      const text = errors.map((m) => `  ${spec.file}:${m.lineNum}:${m.linePos}: ${m.message}`).join('\n');
      throw new ShaderError(`shader ${spec.file} failed to compile:\n${text}`);
    }
    const layout = device.createBindGroupLayout({
      label: spec.file,
      entries: spec.bindings.map((b, i) => ({
        binding: i,
        visibility: ShaderStage.COMPUTE,
        buffer: { type: b.access === 'uniform' ? 'uniform' : b.access === 'read' ? 'read-only-storage' : 'storage' },
      })),
    });
    const pipeline = device.createComputePipeline({
      label: spec.file,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: spec.entry ?? 'main', constants: Object.fromEntries(Object.entries(constants).map(([k, v]) => [k, Number(v)])) },
    });
    const err = await device.popErrorScope();
    if (err) {
      const keys = Object.entries(constants).map(([k, v]) => `${k}=${v}`).join(', ');
      throw new ShaderError(`shader ${spec.file} failed to validate (constants: ${keys || 'none'}): ${err.message}`);
    }
    const keys = Object.entries(constants).map(([k, v]) => `${k}=${Number(v)}`).join(',');
    return new Kernel(gpu, spec, keys ? `${spec.file}{${keys}}` : spec.file, pipeline, layout);
  }

  /**
   * Binds tensors (by binding name) and params into a Dispatch of `workgroups`. Checks that every
   * binding is given, fits the binding-size limit and is aligned.
   */
  bind(label: string, tensors: Record<string, Tensor>, params: Record<FieldsOf<L>, number>, workgroups: readonly [number, number?, number?]): Dispatch {
    return this.bindWithParams(label, tensors, params, workgroups).dispatch;
  }

  /**
   * `bind` for params that change between replays (learning rate, step number, token counts):
   * also returns `write(values)`, which rewrites this dispatch's own params buffer in place
   * (queue.writeBuffer, no allocation); the next submitted command buffer sees the new values.
   */
  bindWritable(label: string, tensors: Record<string, Tensor>, params: Record<FieldsOf<L>, number>, workgroups: readonly [number, number?, number?]): WritableDispatch<L> {
    const { dispatch, uniform } = this.bindWithParams(label, tensors, params, workgroups);
    const spec = this.spec;
    const queue = this.gpu.device.queue;
    return { dispatch, write: (values) => queue.writeBuffer(uniform, 0, packParams(spec.params, values as Record<string, number>)) };
  }

  private bindWithParams(
    label: string,
    tensors: Record<string, Tensor>,
    params: Record<FieldsOf<L>, number>,
    workgroups: readonly [number, number?, number?],
  ): { dispatch: Dispatch; uniform: GPUBuffer } {
    const { device, limits } = this.gpu;
    const [x, y = 1, z = 1] = workgroups;
    for (const w of [x, y, z]) {
      if (!Number.isInteger(w) || w < 1 || w > limits.maxComputeWorkgroupsPerDimension) {
        throw new DeviceLimitError(`${label} (${this.spec.file}): workgroup count ${w} outside 1..${limits.maxComputeWorkgroupsPerDimension}`);
      }
    }
    const uniform = device.createBuffer({ label: `${label} params`, size: this.spec.params.byteSize, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
    device.queue.writeBuffer(uniform, 0, packParams(this.spec.params, params as Record<string, number>));
    const entries: GPUBindGroupEntry[] = this.spec.bindings.map((b, i) => {
      if (b.access === 'uniform') return { binding: i, resource: { buffer: uniform } };
      const t = tensors[b.name];
      if (!t) throw new ShapeError(`${label} (${this.spec.file}): binding "${b.name}" was not given`);
      if (t.byteSize > limits.maxStorageBufferBindingSize) {
        throw new DeviceLimitError(
          `${label} (${this.spec.file}): ${t.label} is ${t.byteSize} bytes, over this device's maxStorageBufferBindingSize of ${limits.maxStorageBufferBindingSize}`,
        );
      }
      if (t.offset % limits.minStorageBufferOffsetAlignment !== 0) {
        throw new ShapeError(`${label}: ${t.label} offset ${t.offset} is not a multiple of ${limits.minStorageBufferOffsetAlignment}`);
      }
      return { binding: i, resource: { buffer: t.buffer, offset: t.offset, size: Math.ceil(t.byteSize / 4) * 4 } };
    });
    const extra = Object.keys(tensors).filter((k) => !this.spec.bindings.some((b) => b.name === k));
    if (extra.length > 0) throw new ShapeError(`${label} (${this.spec.file}): unknown bindings ${extra.join(', ')}`);
    const bindGroup = device.createBindGroup({ label, layout: this.layout, entries });
    return { dispatch: { label: `${label} [${this.name}]`, pipeline: this.pipeline, bindGroup, workgroups: [x, y, z] }, uniform };
  }
}

/** A Dispatch whose params can be rewritten between replays (see Kernel.bindWritable). */
export interface WritableDispatch<L extends ParamsLayout = ParamsLayout> {
  readonly dispatch: Dispatch;
  write(params: Record<FieldsOf<L>, number>): void;
}

/** Workgroups needed to cover `n` items with `perGroup` items each. */
export function groups(n: number, perGroup: number): number {
  return Math.max(1, Math.ceil(n / perGroup));
}
