import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readShader, shaderPath } from '../../src/kernels/shader.js';
import { matrixWorkgroupVars, workgroupVars } from '../helpers/wgsl-layout.js';

/**
 * On the H200's driver, a tensor-core fragment load from workgroup memory reads from its address
 * rounded down to 16 bytes, and the driver places workgroup variables where it likes: one 8-byte
 * variable beside an f16 tile shifted every fragment of the flash attention by 4 halves
 * (bench/results/h200-2026-12-03-attention-sgm-fixed.md). Lavapipe has no subgroup matrices, so the
 * rule is checked on the text: in a shader that loads or stores subgroup matrices through workgroup
 * memory, every workgroup variable is a multiple of 16 bytes.
 */
const SHADERS = readdirSync(shaderPath('.')).filter((f) => f.endsWith('.wgsl')).sort();
const MATRIX_SHADERS = SHADERS.filter((f) => matrixWorkgroupVars(readShader(f)).length > 0);

describe('workgroup memory of the subgroup-matrix shaders', () => {
  it('finds the shaders that take fragments from workgroup memory', () => {
    for (const f of ['attention_sgm_forward.wgsl', 'attention_sgm_backward_dq.wgsl', 'attention_sgm_backward_dkdv.wgsl', 'matmul_sgm_forward.wgsl', 'matmul_sgm_input.wgsl']) {
      expect(MATRIX_SHADERS).toContain(f);
    }
  });

  it.each(MATRIX_SHADERS)('%s: every workgroup variable is a multiple of 16 bytes', (file) => {
    const vars = workgroupVars(readShader(file));
    expect(vars.length).toBeGreaterThan(0);
    const bad = vars.filter((v) => v.bytes % 16 !== 0).map((v) => `${v.name}: ${v.type} = ${v.bytes} bytes`);
    expect(bad).toEqual([]);
  });
});

describe('workgroupVars (the reader the rule relies on)', () => {
  it('sizes scalars, vectors, arrays over constant expressions, atomics and structs with WGSL layout', () => {
    const text = `const A = 4u;\noverride B: u32 = A * 2u + 1u; // 9\nconst C = (B - 1u) / 3u; // 2\n` +
      `struct S { a: atomic<u32>, b: u32, c: vec2<u32> }\nstruct T { x: f32, y: vec3<f32> }\n` +
      `var<workgroup> s1: u32;\nvar<workgroup> s2: array<f16, B * 3u>;\nvar<workgroup> s3: array<vec3<f32>, C>;\n` +
      `var<workgroup> s4: S;\nvar<workgroup> s5: T;\nvar<workgroup> s6: array<i32, min(A, C) + max(1u, 3u) % 2u>;\n`;
    expect(workgroupVars(text).map((v) => [v.name, v.bytes])).toEqual([['s1', 4], ['s2', 54], ['s3', 32], ['s4', 16], ['s5', 32], ['s6', 12]]);
  });

  it('names what it cannot size instead of guessing', () => {
    expect(() => workgroupVars('var<workgroup> m: mat4x4<f32>;')).toThrow('mat4x4<f32>');
    expect(() => workgroupVars('var<workgroup> a: array<f32, N>;')).toThrow('unknown name N');
  });

  it('tells workgroup fragment sources from storage ones', () => {
    const text = 'var<workgroup> t: array<f16, 64>;\n@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n' +
      'fn f() { let a = subgroupMatrixLoad<L>(&t, 0u, false, 8u); subgroupMatrixStore(&o, 0u, a, false, 8u); }';
    expect(matrixWorkgroupVars(text)).toEqual(['t']);
  });
});
