import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readShader, shaderPath } from '../../src/kernels/shader.js';
import { testGpu } from '../helpers/gpu.js';
import { stubSubgroupMatrices } from '../helpers/sgm-stubs.js';

/**
 * The tensor-core shaders cannot run on lavapipe (no subgroup matrices), so CI compiles them with
 * the fragment builtins stubbed (tests/helpers/sgm-stubs.ts): every WGSL rule except the
 * subgroup-matrix ones is checked here — syntax, types, override expressions, and that every barrier
 * sits in uniform control flow — for the override sets the kernels use. Their numbers are tested
 * on the GPU host (tests/gpu). A pipeline may still be refused for its workgroup memory, which
 * lavapipe caps at 32 KiB and the tensor-core devices do not.
 */
const CASES: Record<string, Record<string, number>[]> = {
  'attention_sgm_forward.wgsl': [{ DH: 128, BC: 32 }, { DH: 128, BC: 16 }, { DH: 64, BC: 32 }, { DH: 96, BC: 16 }],
  'attention_sgm_backward_dq.wgsl': [{ DH: 128, BC: 32 }, { DH: 64, BC: 16 }, { DH: 96, BC: 32 }],
  'attention_sgm_backward_dkdv.wgsl': [{ DH: 128, BQ: 32 }, { DH: 64, BQ: 16 }, { DH: 96, BQ: 32 }],
  'matmul_sgm_forward.wgsl': [0, 1, 2, 3].flatMap((FORMAT) => [
    { FORMAT, ACCUMULATE: 0, LORA: 0 },
    { FORMAT, ACCUMULATE: 1, LORA: 1 },
  ]).concat([{ FORMAT: 2, ACCUMULATE: 0, LORA: 1, UNROLL: 0, PREFETCH: 0 }, { FORMAT: 2, ACCUMULATE: 0, LORA: 1, PREFETCH: 1 }, { FORMAT: 2, ACCUMULATE: 0, LORA: 0, SG_M: 8, SG_N: 1, FM: 2, FN: 8 }]),
  'matmul_sgm_input.wgsl': [0, 1, 2, 3].flatMap((FORMAT) => [{ FORMAT, ACCUMULATE: 0 }, { FORMAT, ACCUMULATE: 1, PREFETCH: 0 }]),
};

const gpu = await testGpu();
const WORKGROUP_MEMORY = /total use of workgroup storage .* is larger than the maximum allowed/;

describe('the subgroup-matrix shaders compile with the fragment builtins stubbed', () => {
  it('covers every shader that enables subgroup matrices', () => {
    const sgm = readdirSync(shaderPath('.')).filter((f) => f.endsWith('.wgsl') && /^enable chromium_experimental_subgroup_matrix;/m.test(readShader(f)));
    expect(sgm.sort()).toEqual(Object.keys(CASES).sort());
  });

  it('still reports what the real compiler would: a barrier in non-uniform control flow', async () => {
    const code = stubSubgroupMatrices(readShader('attention_sgm_forward.wgsl')).replace(/^fn main\(.*\{$/m, (line) => `${line}\n  if (lid == 0u) { workgroupBarrier(); }`);
    expect(code).toContain('if (lid == 0u) { workgroupBarrier(); }');
    const module = gpu.device.createShaderModule({ label: 'broken', code });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
    expect(errors.map((m) => m.message).join('\n')).toMatch(/uniform/);
  });

  it('stubs fragment loads from storage buffers (read-only and read_write) as well as workgroup memory', async () => {
    const code = `enable f16;\nenable chromium_experimental_subgroup_matrix;\n` +
      `alias Left = subgroup_matrix_left<f16, 16, 16>;\nalias Right = subgroup_matrix_right<f16, 16, 16>;\nalias Frag = subgroup_matrix_result<f32, 16, 16>;\n` +
      `@group(0) @binding(0) var<storage, read> a: array<f16>;\n@group(0) @binding(1) var<storage, read_write> y: array<f32>;\n` +
      `@group(0) @binding(2) var<storage, read_write> b: array<f16>;\nvar<workgroup> t: array<f16, 512>;\n` +
      `@compute @workgroup_size(32)\nfn main() {\n  let l = subgroupMatrixLoad<Left>(&a, 0u, false, 16u);\n  let r = subgroupMatrixLoad<Right>(&b, 0u, true, 16u);\n` +
      `  let w = subgroupMatrixLoad<Right>(&t, 0u, false, 16u);\n  subgroupMatrixStore(&y, 0u, subgroupMatrixMultiplyAccumulate(l, w, subgroupMatrixMultiplyAccumulate(l, r, Frag())), false, 16u);\n}\n`;
    const stubbed = stubSubgroupMatrices(code);
    expect(stubbed).toContain('ptr<storage, array<f16>, read>');
    expect(stubbed).toContain('ptr<storage, array<f16>, read_write>');
    const module = gpu.device.createShaderModule({ label: 'storage loads', code: stubbed });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => m.message);
    expect(errors).toEqual([]);
  });

  it.each(Object.keys(CASES))('%s', async (file) => {
    const code = stubSubgroupMatrices(readShader(file));
    const module = gpu.device.createShaderModule({ label: file, code });
    const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error').map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
    expect(errors).toEqual([]);
    let created = 0;
    for (const constants of CASES[file]!) {
      gpu.device.pushErrorScope('validation');
      gpu.device.createComputePipeline({ label: file, layout: 'auto', compute: { module, entryPoint: 'main', constants } });
      const e = await gpu.device.popErrorScope();
      const message = e?.message ?? '';
      expect(message === '' || WORKGROUP_MEMORY.test(message), `${file} ${JSON.stringify(constants)}: ${message}`).toBe(true);
      if (message === '') created++;
    }
    console.log(`${file}: ${created} of ${CASES[file]!.length} override sets made pipelines; the rest need more workgroup memory than lavapipe's 32 KiB`);
  });
});
