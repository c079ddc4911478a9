// PROBE: the GPU cost of one dispatch inside a compute pass (Dawn inserts a barrier between
// dispatches that touch the same storage buffer): N dependent dispatches of a tiny kernel, timed
// with timestamp queries, for 1 and 132·4 workgroups; and N dispatches over 8 rotating buffers.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../N');
const { Gpu } = await import(join(root, 'dist/src/kernels/gpu.js'));
const { timeDispatches } = await import(join(root, 'dist/src/kernels/dispatch.js'));
const { BufferUsage } = await import(join(root, 'dist/src/kernels/usage.js'));
const gpu = await Gpu.open();
const dev = gpu.device;
console.log('device', gpu.describe());
const module = dev.createShaderModule({ code: `
@group(0) @binding(0) var<storage, read_write> b: array<f32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>) { let i = g.x % arrayLength(&b); b[i] = b[i] * 0.5 + 1.0; }` });
const pipeline = dev.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
const bufs = Array.from({ length: 8 }, () => dev.createBuffer({ size: 1 << 20, usage: BufferUsage.STORAGE }));
const groups = bufs.map((buffer) => dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer } }] }));
for (const wgs of [1, 528]) {
  for (const rotate of [1, 8]) {
    for (const n of [100, 1000]) {
      const list = Array.from({ length: n }, (_, i) => ({ label: 'd', pipeline, bindGroup: groups[i % rotate], workgroups: [wgs, 1, 1] }));
      const s = await timeDispatches(gpu, list, 9, 3);
      console.log(`workgroups ${String(wgs).padStart(3)} buffers ${rotate} dispatches ${String(n).padStart(4)}: ${(s * 1e3).toFixed(3)} ms, ${(s / n * 1e6).toFixed(2)} µs a dispatch`);
    }
  }
}
