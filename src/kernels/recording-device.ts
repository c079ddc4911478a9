import { Gpu } from './gpu.js';

/**
 * A device that records the buffers it is asked for and runs nothing: shader modules compile to
 * nothing, pipelines and bind groups are empty objects, command encoders and the queue drop what
 * they are given. Programs built on it go through the same code as on the real device (the same
 * kernels, tile choices and split plans, from `like`'s features and limits), so their dispatch
 * lists and buffers are the real ones' — counted before anything is allocated on the GPU (the
 * memory plan's dispatch counts, src/train/dispatch-count.ts). Nothing may be read back from it.
 */
export interface RecordedBuffer {
  readonly label: string;
  readonly size: number;
}

export class RecordingDevice {
  readonly buffers: RecordedBuffer[] = [];
  readonly queue = {
    writeBuffer: (): void => undefined,
    submit: (): void => undefined,
    onSubmittedWorkDone: async (): Promise<void> => undefined,
  };
  readonly lost: Promise<GPUDeviceLostInfo> = new Promise(() => undefined);
  readonly features = new Set<string>();

  constructor(
    readonly limits: GPUSupportedLimits,
    readonly adapterInfo: GPUAdapterInfo,
  ) {}

  createBuffer(d: GPUBufferDescriptor): GPUBuffer {
    this.buffers.push({ label: d.label ?? '', size: d.size });
    const fail = (): never => {
      throw new Error(`recording device: "${d.label}" cannot be read (the recording device runs nothing)`);
    };
    return { label: d.label ?? '', size: d.size, usage: d.usage, destroy: () => undefined, mapAsync: fail, getMappedRange: fail, unmap: () => undefined } as unknown as GPUBuffer;
  }

  createShaderModule(): GPUShaderModule {
    return { getCompilationInfo: async () => ({ messages: [] }) } as unknown as GPUShaderModule;
  }

  createBindGroupLayout(): GPUBindGroupLayout {
    return {} as GPUBindGroupLayout;
  }

  createPipelineLayout(): GPUPipelineLayout {
    return {} as GPUPipelineLayout;
  }

  createComputePipeline(): GPUComputePipeline {
    return { getBindGroupLayout: () => ({}) } as unknown as GPUComputePipeline;
  }

  async createComputePipelineAsync(): Promise<GPUComputePipeline> {
    return this.createComputePipeline();
  }

  createBindGroup(): GPUBindGroup {
    return {} as GPUBindGroup;
  }

  createQuerySet(): GPUQuerySet {
    return { destroy: () => undefined } as unknown as GPUQuerySet;
  }

  createCommandEncoder(): GPUCommandEncoder {
    const none = (): void => undefined;
    const pass = { setPipeline: none, setBindGroup: none, dispatchWorkgroups: none, dispatchWorkgroupsIndirect: none, end: none };
    return { beginComputePass: () => pass, copyBufferToBuffer: none, clearBuffer: none, resolveQuerySet: none, writeTimestamp: none, finish: () => ({}) } as unknown as GPUCommandEncoder;
  }

  pushErrorScope(): void {}

  async popErrorScope(): Promise<GPUError | null> {
    return null;
  }

  addEventListener(): void {}

  destroy(): void {}
}

/** A Gpu on a recording device with `like`'s adapter, features and limits; `device` is what it recorded. */
export function recordingGpu(like: Gpu): { gpu: Gpu; device: RecordingDevice } {
  const device = new RecordingDevice(like.device.limits, like.device.adapterInfo);
  return { gpu: Gpu.over(device as unknown as GPUDevice, like), device };
}
