import type { Gpu } from './gpu.js';
import { BufferUsage, MapMode } from './usage.js';

/** One recorded compute dispatch: pipeline, bound buffers, grid. Built once, replayed many times. */
export interface Dispatch {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
}

/** Records `list` into one compute pass of `encoder`. No allocation besides the pass itself. */
export function encodeDispatches(gpu: Gpu, encoder: GPUCommandEncoder, list: readonly Dispatch[], timestampWrites?: GPUComputePassTimestampWrites): void {
  const pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
  for (const d of list) {
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  }
  pass.end();
  if (list.length > 0) gpu.lastKernel = list[list.length - 1].label;
}

/** Submits `list` as one command buffer with one compute pass. */
export function submitDispatches(gpu: Gpu, list: readonly Dispatch[]): void {
  gpu.check();
  const enc = gpu.device.createCommandEncoder();
  encodeDispatches(gpu, enc, list);
  gpu.device.queue.submit([enc.finish()]);
}

/**
 * GPU time of `list` in seconds (median of `reps` runs after `warmup`): timestamp queries when the
 * device has them, else wall clock around onSubmittedWorkDone.
 */
export async function timeDispatches(gpu: Gpu, list: readonly Dispatch[], reps = 10, warmup = 2): Promise<number> {
  const device = gpu.device;
  for (let i = 0; i < warmup; i++) submitDispatches(gpu, list);
  await gpu.sync();
  const times: number[] = [];
  if (gpu.has('timestamp-query')) {
    const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolve = device.createBuffer({ size: 16, usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC });
    const read = device.createBuffer({ size: 16, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    for (let r = 0; r < reps; r++) {
      const enc = device.createCommandEncoder();
      encodeDispatches(gpu, enc, list, { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 });
      enc.resolveQuerySet(qs, 0, 2, resolve, 0);
      enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(MapMode.READ);
      const t = new BigUint64Array(read.getMappedRange().slice(0));
      read.unmap();
      times.push(Number(t[1] - t[0]) * 1e-9);
    }
    qs.destroy();
    resolve.destroy();
    read.destroy();
  } else {
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      submitDispatches(gpu, list);
      await device.queue.onSubmittedWorkDone();
      times.push((performance.now() - t0) * 1e-3);
    }
  }
  gpu.check();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
