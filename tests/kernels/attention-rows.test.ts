import { describe, expect, it } from 'vitest';
import { composeShader } from '../../src/kernels/shader-source.js';
import { readShaderFile } from '../../src/kernels/shader.js';
import { roundToF16 } from '../../src/kernels/matmul-sgm.js';
import { BufferUsage } from '../../src/kernels/usage.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/**
 * shaders/lib/attention_rows.wgsl on lavapipe: the staging the three tensor-core attention passes
 * share needs no subgroup matrices, so it is run here through a small test shader (the lib's names
 * defined as the passes define them) and checked element by element against f16(x·s) in float64 —
 * rows past T as zeros, and every half outside the tile still holding its poison.
 */
const THREADS = 128;
const SK_PAD = 8;
const POISON = -7;

const TEST_SHADER = `enable f16;
const THREADS = ${THREADS}u;
override DH4: u32 = 32u;
const SK = 128u + ${SK_PAD}u;
const HALVES = 64u * SK + 2u * SK;
struct P { tokens: u32, tok0: u32, first: u32, rows: u32, heads: u32, head: u32, base: u32, s: f32 }
@group(0) @binding(0) var<uniform> params: P;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> halves: array<f16, HALVES>;
// #include "lib/attention_rows.wgsl"
@compute @workgroup_size(THREADS)
fn main(@builtin(local_invocation_index) lid: u32) {
  for (var i = lid; i < HALVES; i += THREADS) {
    halves[i] = f16(${POISON}.0);
  }
  workgroupBarrier();
  stageRows(&src, lid, params.tok0, params.first, params.rows, params.heads, params.head, params.base, params.s);
  workgroupBarrier();
  for (var i = lid; i < HALVES; i += THREADS) {
    out[i] = f32(halves[i]);
  }
}`;

interface Case {
  readonly T: number;
  readonly B: number;
  readonly b: number;
  readonly heads: number;
  readonly head: number;
  readonly dh: number;
  readonly first: number;
  readonly rows: number;
  readonly base: number;
  readonly s: number;
}

const CASES: readonly Case[] = [
  { T: 512, B: 2, b: 1, heads: 8, head: 5, dh: 128, first: 448, rows: 64, base: 0, s: 2 ** 13 }, // the forward's Q tile
  { T: 300, B: 3, b: 2, heads: 3, head: 2, dh: 128, first: 288, rows: 32, base: 32 * (128 + SK_PAD), s: 0.5 }, // past T: 20 rows of zeros
  { T: 77, B: 2, b: 0, heads: 4, head: 0, dh: 96, first: 64, rows: 37, base: 8, s: 2 ** -20 }, // odd rows, a head of 96, the next batch row past T
  { T: 130, B: 2, b: 1, heads: 1, head: 0, dh: 64, first: 0, rows: 64, base: 0, s: 1 },
];

const gpu = await testGpu();

describe('lib/attention_rows.wgsl stageRows', () => {
  it.skipIf(!gpu.features.has('shader-f16'))('stages f16(x·s) rows, zeros past T, nothing outside the tile', async () => {
    const code = composeShader('test_attention_rows.wgsl', (p) => (p === 'test_attention_rows.wgsl' ? TEST_SHADER : readShaderFile(p)));
    const module = gpu.device.createShaderModule({ label: 'attention rows test', code });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
    expect(errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)).toEqual([]);
    const SK = 128 + SK_PAD;
    const HALVES = 64 * SK + 2 * SK;
    for (const c of CASES) {
      const pipeline = gpu.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main', constants: { DH4: c.dh / 4 } } });
      const rng = new Rng(c.T * 7 + c.dh);
      const width = c.heads * c.dh;
      const x = rng.f32(c.B * c.T * width).map((v, i) => v * (i % 5 === 0 ? 1e3 : 1));
      const src = gpu.tensorFrom('src', [c.B * c.T, width], 'f32', x);
      const out = gpu.tensor('out', [HALVES], 'f32');
      gpu.fill32(out, 0x7fc00000);
      const params = gpu.device.createBuffer({ size: 32, usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST });
      const words = new Uint32Array([c.T, c.b * c.T, c.first, c.rows, c.heads, c.head, c.base, 0]);
      new Float32Array(words.buffer)[7] = c.s;
      gpu.device.queue.writeBuffer(params, 0, words);
      const bind = gpu.device.createBindGroup({
        layout: pipeline.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: params } },
          { binding: 1, resource: { buffer: src.buffer } },
          { binding: 2, resource: { buffer: out.buffer } },
        ],
      });
      const enc = gpu.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bind);
      pass.dispatchWorkgroups(1);
      pass.end();
      gpu.device.queue.submit([enc.finish()]);
      const got = await gpu.readF32(out);
      const want = new Float64Array(HALVES).fill(POISON);
      for (let r = 0; r < c.rows; r++) {
        for (let d = 0; d < c.dh; d++) {
          const tok = c.first + r;
          want[c.base + r * SK + d] = tok < c.T ? roundToF16(Math.fround(x[(c.b * c.T + tok) * width + c.head * c.dh + d]! * c.s)) : 0;
        }
      }
      let bad = 0;
      let first = '';
      for (let i = 0; i < HALVES; i++) {
        if (got[i] !== want[i]) {
          if (bad === 0) first = `half ${i} (row ${Math.floor((i - c.base) / SK)}, column ${(i - c.base) % SK}): got ${got[i]}, expected ${want[i]}`;
          bad++;
        }
      }
      expect(bad, `${JSON.stringify(c)}: ${bad} halves differ, first ${first}`).toBe(0);
      src.buffer.destroy();
      out.buffer.destroy();
      params.destroy();
    }
  });
});
