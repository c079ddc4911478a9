import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ShaderError } from '../../src/errors.js';
import type { OptionalFeature } from '../../src/kernels/gpu.js';
import { NF4_CODEBOOK } from '../../src/kernels/nf4.js';
import { readShader, readShaderFile, shaderPath } from '../../src/kernels/shader.js';
import { composeShader, shaderIncludes } from '../../src/kernels/shader-source.js';
import { testGpu } from '../helpers/gpu.js';

const SHADERS = readdirSync(shaderPath('.')).filter((f) => f.endsWith('.wgsl')).sort();
const LIBS = readdirSync(shaderPath('lib')).filter((f) => f.endsWith('.wgsl')).map((f) => `lib/${f}`).sort();

/** An in-memory shader folder for the mechanism's own cases. */
const folder = (files: Record<string, string>) => (path: string) => {
  const text = files[path];
  if (text === undefined) throw new ShaderError(`no file ${path}`);
  return text;
};

describe('composeShader', () => {
  it('replaces an include line by the file, nested includes too, each file once', () => {
    const read = folder({
      'a.wgsl': 'A0\n// #include "lib/b.wgsl"\n  //  #include "lib/c.wgsl"  \nA3',
      'lib/b.wgsl': 'B0\n// #include "lib/c.wgsl"',
      'lib/c.wgsl': 'C0',
    });
    expect(composeShader('a.wgsl', read)).toBe('A0\nB0\nC0\n// (lib/c.wgsl already included)\nA3');
  });

  it('refuses a cycle, naming the chain', () => {
    const read = folder({ 'a.wgsl': '// #include "lib/b.wgsl"', 'lib/b.wgsl': '// #include "a.wgsl"' });
    expect(() => composeShader('a.wgsl', read)).toThrow(ShaderError);
    expect(() => composeShader('a.wgsl', read)).toThrow('shader include cycle: a.wgsl → lib/b.wgsl → a.wgsl');
    expect(() => composeShader('s.wgsl', folder({ 's.wgsl': '// #include "s.wgsl"' }))).toThrow('cycle: s.wgsl → s.wgsl');
  });

  it('refuses a path out of shaders/ or not a .wgsl file, naming file and line', () => {
    expect(() => composeShader('a.wgsl', folder({ 'a.wgsl': 'x\n// #include "../secret.wgsl"' }))).toThrow('a.wgsl:2: #include "../secret.wgsl" must name a .wgsl file');
    expect(() => composeShader('a.wgsl', folder({ 'a.wgsl': '// #include "lib/x.txt"' }))).toThrow(/a\.wgsl:1/);
  });

  it('every include of every shader resolves, and no composed text keeps an #include line', () => {
    const used = new Set<string>();
    for (const file of [...SHADERS, ...LIBS]) {
      for (const inc of shaderIncludes(readShaderFile(file))) used.add(inc);
      expect(readShader(file), file).not.toMatch(/#include/);
    }
    // every library file is used by some shader
    expect([...used].sort()).toEqual(LIBS);
  });
});

describe('shared WGSL pieces', () => {
  it('the WGSL NF4 codebook holds the f32 bit patterns of the TypeScript NF4_CODEBOOK', () => {
    const text = readShaderFile('lib/nf4_codebook.wgsl');
    const words = [...text.matchAll(/0x([0-9a-f]{8})u/g)].map((m) => parseInt(m[1]!, 16));
    const bits = new Uint32Array(new Float32Array(NF4_CODEBOOK).buffer);
    expect(words).toEqual([...bits]);
  });

  it('no shader repeats the codebook or the 65535 grid fold outside shaders/lib', () => {
    for (const file of SHADERS) {
      const code = readShaderFile(file).split('\n').filter((l) => !l.trimStart().startsWith('//')).join('\n');
      expect(code, file).not.toMatch(/65535/);
      expect(code, file).not.toMatch(/0x3f3913b3u/);
    }
  });

  it('the composed text of each shader compiles on this device', async () => {
    const gpu = await testGpu();
    const needs: Record<string, OptionalFeature> = { subgroups: 'subgroups', f16: 'shader-f16', chromium_experimental_subgroup_matrix: 'chromium-experimental-subgroup-matrix' };
    let compiled = 0;
    let subgroupMatrix = 0;
    for (const file of SHADERS) {
      const code = readShader(file);
      const enables = [...code.matchAll(/^enable ([a-z0-9_]+);/gm)].map((m) => m[1]!);
      if (enables.includes('chromium_experimental_subgroup_matrix')) subgroupMatrix++;
      if (enables.some((e) => !gpu.features.has(needs[e] ?? (e as OptionalFeature)))) continue;
      const module = gpu.device.createShaderModule({ label: file, code });
      const errors = (await module.getCompilationInfo()).messages.filter((m) => m.type === 'error');
      expect(errors.map((m) => `${file}:${m.lineNum}: ${m.message}`)).toEqual([]);
      compiled++;
    }
    // lavapipe lacks only the subgroup-matrix extension: all shaders but the matmul_sgm_* ones compile here
    expect(compiled).toBeGreaterThanOrEqual(SHADERS.length - subgroupMatrix);
  });
});
