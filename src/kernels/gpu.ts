import { create } from 'webgpu';
import { DeviceError, DeviceLimitError } from '../errors.js';
import { BufferUsage, MapMode } from './usage.js';
import { byteLength, type DType, type Tensor, tensorView, numel } from './tensor.js';

/** Features this project uses when the adapter offers them. */
export const OPTIONAL_FEATURES = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'] as const;
export type OptionalFeature = (typeof OPTIONAL_FEATURES)[number];

export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export interface GpuOptions {
  /** Features not to request even when offered (e.g. to time a kernel without subgroup-matrix). */
  disable?: readonly OptionalFeature[];
  /**
   * Dawn's robustness transform: every storage-buffer and workgroup-array access clamped into
   * bounds by extra code in each shader. Off by default (`gpuToggles`); true turns it on, e.g. to
   * tell a kernel's out-of-bounds access from another fault.
   */
  robustness?: boolean;
  /** Dawn instance toggles in full (overrides `robustness`); the default is `gpuToggles(options)`. */
  toggles?: readonly string[];
}

/**
 * The Dawn instance toggles of a run: f16 on NVIDIA, unquantised timestamps, and Dawn's robustness
 * transform off unless `robustness` is true. The transform predicates every subgroupMatrixLoad and
 * Store and clamps every buffer index; on the H200 the tensor-core input gradient ran 30–60 %
 * faster without it (o_proj 96 → 155 TFLOP/s, down_proj 92 → 150;
 * bench/results/h200-2026-12-02-matmul-sgm-input.md). Chrome's Graphite renderer and ONNX Runtime's
 * WebGPU provider turn it off too. Every kernel here bounds its own accesses — each is tested at
 * awkward sizes with its output poisoned, on lavapipe (where CI runs with the same toggles) and on
 * the GPU host.
 */
export function gpuToggles(options: { robustness?: boolean } = {}): string[] {
  const enable = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia', ...(options.robustness ? [] : ['disable_robustness'])];
  return [`enable-dawn-features=${enable.join(',')}`, 'disable-dawn-features=timestamp_quantization'];
}

export const NO_ADAPTER_HELP =
  'No WebGPU adapter found. Install a Vulkan GPU driver (NVIDIA, AMD or Intel) with the Vulkan loader ' +
  '(Debian/Ubuntu: libvulkan1), or on a CPU-only Linux machine Mesa lavapipe >= 25 ' +
  '(Debian 12: add bookworm-backports to the apt sources, then ' +
  '`apt-get install -y -t bookworm-backports mesa-vulkan-drivers`). See README.md, "No GPU?".';

/**
 * The one GPU object of a run: created in main (or a test file), passed down to everything that
 * records or reads GPU work. Holds the Dawn device, its features and limits, and records which
 * kernel ran last so that a lost device or a validation error names it.
 */
export class Gpu {
  readonly features: ReadonlySet<OptionalFeature>;
  readonly limits: {
    maxStorageBufferBindingSize: number;
    maxBufferSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
    minStorageBufferOffsetAlignment: number;
    maxStorageBuffersPerShaderStage: number;
  };
  /** Label of the last dispatch recorded (for error messages). */
  lastKernel = '(none)';
  private failure: Error | undefined;
  /** Tail of the chain that runs error-scoped work (pipeline creation) one at a time. */
  private scoped: Promise<unknown> = Promise.resolve();
  private destroyed = false;

  private constructor(
    /** The Dawn instance: kept referenced for as long as the device lives. */
    private readonly instance: GPU,
    readonly device: GPUDevice,
    readonly adapterInfo: { vendor: string; architecture: string; description: string; device: string },
    features: Set<OptionalFeature>,
    readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfig[],
    /** Whether Dawn's robustness transform is on (GpuOptions.robustness). */
    readonly robustness: boolean,
  ) {
    this.features = features;
    const l = device.limits;
    this.limits = {
      maxStorageBufferBindingSize: Number(l.maxStorageBufferBindingSize),
      maxBufferSize: Number(l.maxBufferSize),
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
    };
    device.addEventListener('uncapturederror', (ev) => {
      const msg = (ev as GPUUncapturedErrorEvent).error.message;
      this.failure ??= new DeviceError(`GPU error after kernel "${this.lastKernel}": ${msg}`);
    });
    void device.lost.then((info) => {
      if (this.destroyed) return;
      this.failure = new DeviceError(
        `GPU device lost (reason: ${info.reason}) after kernel "${this.lastKernel}": ${info.message}. ` +
          'Usual causes: the driver reset the GPU (a crash or a watchdog timeout: update the GPU driver and look at the system log), ' +
          'or the GPU ran out of memory (lower per_device_train_batch_size or max_seq_length, or close other GPU programs).',
      );
    });
  }

  /** Opens the adapter and device with the project's toggles; no adapter is a DeviceError (exit 2). */
  static async open(options: GpuOptions = {}): Promise<Gpu> {
    const toggles = [...(options.toggles ?? gpuToggles(options))];
    const instance = create(toggles);
    const adapter = await instance.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new DeviceError(NO_ADAPTER_HELP);
    const wanted = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f) && !options.disable?.includes(f));
    const al = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: wanted as unknown as GPUFeatureName[],
      requiredLimits: {
        maxStorageBufferBindingSize: al.maxStorageBufferBindingSize,
        maxBufferSize: al.maxBufferSize,
        maxComputeWorkgroupStorageSize: al.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: al.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: al.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupSizeY: al.maxComputeWorkgroupSizeY,
        maxStorageBuffersPerShaderStage: al.maxStorageBuffersPerShaderStage,
      },
    });
    const info = adapter.info as unknown as Record<string, unknown>;
    const configs = ((info.subgroupMatrixConfigs as unknown[] | undefined) ?? []).map((c) => {
      const o = c as Record<string, unknown>;
      return {
        componentType: String(o.componentType),
        resultComponentType: String(o.resultComponentType),
        M: Number(o.M),
        N: Number(o.N),
        K: Number(o.K),
      };
    });
    return new Gpu(
      instance,
      device,
      {
        vendor: String(info.vendor ?? ''),
        architecture: String(info.architecture ?? ''),
        description: String(info.description ?? ''),
        device: String(info.device ?? ''),
      },
      new Set(wanted),
      configs,
      !toggles.some((t) => /^enable-dawn-features=.*\bdisable_robustness\b/.test(t)),
    );
  }

  /**
   * A Gpu over another device object with `like`'s adapter, features and subgroup-matrix configs:
   * for the recording device (src/kernels/recording-device.ts), on which programs are built to be
   * counted, not run.
   */
  static over(device: GPUDevice, like: Pick<Gpu, 'adapterInfo' | 'features' | 'subgroupMatrixConfigs' | 'robustness'>): Gpu {
    return new Gpu({} as GPU, device, like.adapterInfo, new Set(like.features), like.subgroupMatrixConfigs, like.robustness);
  }

  /**
   * Runs `fn` after every earlier call has finished. Error scopes are per device, not per call, so
   * pipelines created concurrently (Promise.all) could catch each other's validation errors.
   */
  oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.scoped.then(fn, fn);
    this.scoped = run.catch(() => undefined);
    return run;
  }

  has(feature: OptionalFeature): boolean {
    return this.features.has(feature);
  }

  /** One line describing the adapter, for logs and benchmark records. */
  describe(): string {
    const i = this.adapterInfo;
    return `${i.vendor} ${i.architecture} ${i.description || i.device}`.replace(/\s+/g, ' ').trim() + ` [${[...this.features].join(', ')}]`;
  }

  /** Throws the first error the device reported (validation error, device loss), if any. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** A raw buffer; refuses sizes past the device's maximum with a DeviceLimitError naming it. */
  buffer(label: string, bytes: number, usage: number = BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST): GPUBuffer {
    this.check();
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.limits.maxBufferSize) {
      throw new DeviceLimitError(`${label}: ${size} bytes exceeds this device's maxBufferSize of ${this.limits.maxBufferSize}`);
    }
    return this.device.createBuffer({ label, size, usage });
  }

  /** A storage tensor of its own buffer. */
  tensor(label: string, shape: readonly number[], dtype: DType): Tensor {
    return tensorView(this.buffer(label, byteLength(dtype, numel(shape))), label, shape, dtype);
  }

  /** A storage tensor filled with `data` (its bytes must match the tensor's size). */
  tensorFrom(label: string, shape: readonly number[], dtype: DType, data: ArrayBufferView): Tensor {
    const t = this.tensor(label, shape, dtype);
    this.write(t, data);
    return t;
  }

  /** Copies `data` into the tensor (or a byte range of it, from `byteOffset`). */
  write(t: Tensor, data: ArrayBufferView, byteOffset = 0): void {
    if (byteOffset + data.byteLength > t.byteSize) {
      throw new DeviceLimitError(`write to ${t.label}: ${data.byteLength} bytes at ${byteOffset} exceed its ${t.byteSize} bytes`);
    }
    let bytes = data.byteLength;
    if (bytes % 4 !== 0) {
      // writeBuffer needs multiples of 4 bytes: pad a copy (only ever the tail of small tensors).
      const padded = new Uint8Array(Math.ceil(bytes / 4) * 4);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, bytes));
      this.device.queue.writeBuffer(t.buffer, t.offset + byteOffset, padded);
      return;
    }
    this.device.queue.writeBuffer(t.buffer, t.offset + byteOffset, data.buffer, data.byteOffset, bytes);
  }

  /** Fills a tensor's bytes with one 32-bit pattern (e.g. 0x7fc00000 = NaN to poison outputs). */
  fill32(t: Tensor, word: number): void {
    const words = new Uint32Array(t.byteSize / 4).fill(word >>> 0);
    this.device.queue.writeBuffer(t.buffer, t.offset, words);
  }

  /** Reads a tensor's bytes back (waits for all submitted work; throws any device error). */
  async read(t: Tensor): Promise<ArrayBuffer> {
    this.check();
    const staging = this.device.createBuffer({ label: `read ${t.label}`, size: t.byteSize, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(t.buffer, t.offset, staging, 0, t.byteSize);
    this.device.queue.submit([enc.finish()]);
    try {
      await staging.mapAsync(MapMode.READ);
    } catch (e) {
      this.check();
      throw new DeviceError(`reading ${t.label} failed after kernel "${this.lastKernel}": ${(e as Error).message}`, { cause: e });
    }
    const out = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    this.check();
    return out;
  }

  async readF32(t: Tensor): Promise<Float32Array> {
    return new Float32Array(await this.read(t));
  }

  /** Waits until the queue is idle, then throws any device error. */
  async sync(): Promise<void> {
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }

  /** Frees the device; the process can then exit on its own. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.destroy();
  }
}
