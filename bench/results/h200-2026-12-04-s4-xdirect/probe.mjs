// PROBE: forward dequant-matmul with X read as f16 fragments straight from storage (xdirect.wgsl).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../N');
const { Gpu } = await import(join(root, 'dist/src/kernels/gpu.js'));
const { timeDispatches } = await import(join(root, 'dist/src/kernels/dispatch.js'));
const gpu = await Gpu.open();
const dev = gpu.device;
console.log('device', gpu.describe());
const code = readFileSync(join(here, 'xdirect.wgsl'), 'utf8');
dev.pushErrorScope('validation');
const module = dev.createShaderModule({ code });
const info = await module.getCompilationInfo();
for (const m of info.messages) if (m.type === 'error') console.log('wgsl', m.lineNum, m.message);
const NF4 = [0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000].map((b) => new Float32Array(new Uint32Array([b]).buffer)[0]);
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function toHalf(v) { // round to nearest even f16 bits (normal range only)
  f32[0] = v; const x = u32[0]; const sign = (x >>> 16) & 0x8000; let e = ((x >>> 23) & 0xff) - 127 + 15; let m = x & 0x7fffff;
  if (e <= 0) return sign; // flush tiny (probe data avoids)
  let h = (e << 10) | (m >>> 13); const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}
function fromHalf(h) { const s = h & 0x8000 ? -1 : 1; const e = (h >>> 10) & 31; const m = h & 1023; return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15); }
let seed = 12345; const rnd = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) / 4294967296; };
const { BufferUsage: GPUBufferUsage, MapMode: GPUMapMode } = await import(join(root, 'dist/src/kernels/usage.js'));
const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const buf = (data) => { const b = dev.createBuffer({ size: Math.ceil(data.byteLength / 16) * 16, usage }); dev.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength); return b; };
const SHAPES = [['q_proj', 4096, 2560], ['k/v_proj', 1024, 2560], ['gate/up', 9728, 2560], ['o_proj', 2560, 4096], ['down_proj', 2560, 9728]];
const M = 2048;
const out = [];
for (const [name, N, K] of SHAPES) {
  const xh = new Uint16Array(M * K); for (let i = 0; i < xh.length; i++) xh[i] = toHalf((rnd() * 2 - 1) * 4096);
  const words = new Uint32Array((N * K) / 8); for (let i = 0; i < words.length; i++) words[i] = (rnd() * 4294967296) >>> 0;
  const absmax = new Float32Array((N * K) / 64); for (let i = 0; i < absmax.length; i++) absmax[i] = 0.02 + rnd() * 0.04;
  const rs = new Float32Array(M).fill(0.25);
  const B = { p: dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }), y: dev.createBuffer({ size: M * N * 4, usage }), x: buf(xh), s: buf(rs), w: buf(words), a: buf(new Uint32Array(absmax.buffer)) };
  dev.queue.writeBuffer(B.p, 0, new Uint32Array([M, N, K, 0]));
  const bytes = new Uint8Array(words.buffer);
  for (const FN of name === 'k/v_proj' ? [8, 4] : name === 'o_proj' || name === 'down_proj' ? [8, 5] : [8]) {
    for (const pipe of [true, false]) {
      const pipeline = await dev.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main', constants: { SG_M: 8, FN, PIPE_A: pipe ? 1 : 0 } } });
      const bindGroup = dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [B.p, B.y, B.x, B.s, B.w, B.a].map((b, i) => ({ binding: i, resource: { buffer: b } })) });
      const d = { label: 'xdirect', pipeline, bindGroup, workgroups: [Math.ceil(N / (FN * 16)), Math.ceil(M / 256), 1] };
      const sec = await timeDispatches(gpu, Array.from({ length: 10 }, () => d), 7, 3) / 10;
      // check 48 sampled outputs against float64 of the f16 operands
      const rb = dev.createBuffer({ size: M * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const enc = dev.createCommandEncoder(); enc.copyBufferToBuffer(B.y, 0, rb, 0, M * N * 4); dev.queue.submit([enc.finish()]);
      await rb.mapAsync(GPUMapMode.READ); const y = new Float32Array(rb.getMappedRange().slice(0)); rb.unmap(); rb.destroy();
      let worst = 0;
      for (let s = 0; s < 48; s++) {
        const i = s === 0 ? M - 1 : Math.floor(rnd() * M), j = s === 0 ? N - 1 : Math.floor(rnd() * N);
        let ref = 0, mag = 0;
        for (let c = 0; c < K; c++) {
          const e = j * K + c; const byte = bytes[e >> 1]; const q = (e & 1) === 0 ? byte >> 4 : byte & 15;
          const wv = fromHalf(toHalf(fromHalf(toHalf(NF4[q])) * fromHalf(toHalf(absmax[e >> 6]))));
          const xv = fromHalf(xh[i * K + c]);
          ref += xv * wv; mag += Math.abs(xv * wv);
        }
        ref /= 0.25; mag /= 0.25;
        worst = Math.max(worst, Math.abs(y[i * N + j] - ref) / mag);
      }
      const tflops = (2 * M * N * K) / sec / 1e12;
      const r = { shape: name, m: M, n: N, k: K, tile: `256x${FN * 16}x32`, pipeA: pipe, ms: sec * 1e3, tflops, maxRelErr: worst };
      out.push(r);
      console.log(`${name.padEnd(10)} 256x${FN * 16} pipeA ${pipe ? 'on ' : 'off'} ${(sec * 1e3).toFixed(3)} ms ${tflops.toFixed(1)} TFLOP/s err ${worst.toExponential(2)}`);
    }
  }
  Object.values(B).forEach((b) => b.destroy());
}
const err = await dev.popErrorScope(); if (err) console.log('validation error', err.message);
if (process.env.OUT) writeFileSync(join(process.env.OUT, 'xdirect.json'), JSON.stringify({ device: gpu.describe(), date: new Date().toISOString(), results: out }, null, 1));
