import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { KernelSpec } from '../../src/kernels/kernel.js';
import { readShader } from '../../src/kernels/shader.js';

/**
 * Every exported KernelSpec in src/kernels/*.ts and src/train/*.ts against its WGSL file: the binding list (names,
 * order, access) must equal the file's `@group(0) @binding(i) var<...> name` declarations, and the
 * params layout must equal the WGSL struct of the same name field by field.
 */
const dirs = ['src/kernels', 'src/train'].map((d) => join(import.meta.dirname, '../..', d));
const modules = dirs.flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f)));

async function allSpecs(): Promise<[string, KernelSpec][]> {
  const specs: [string, KernelSpec][] = [];
  for (const f of modules) {
    const mod = (await import(f)) as Record<string, unknown>;
    for (const [name, v] of Object.entries(mod)) {
      if (v && typeof v === 'object' && 'file' in v && 'bindings' in v && 'params' in v) specs.push([`${f.split('/src/')[1]}:${name}`, v as KernelSpec]);
    }
  }
  return specs;
}

function wgslBindings(code: string): { binding: number; access: string; name: string }[] {
  const re = /@group\(0\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage\s*,\s*read_write|storage\s*,\s*read|storage)\s*>\s*(\w+)/g;
  return [...code.matchAll(re)].map((m) => ({
    binding: Number(m[1]),
    access: m[2].replace(/\s/g, '') === 'uniform' ? 'uniform' : m[2].includes('read_write') ? 'read_write' : 'read',
    name: m[3],
  }));
}

function wgslStruct(code: string, struct: string): [string, string][] {
  const m = new RegExp(`struct\\s+${struct}\\s*\\{([^}]*)\\}`).exec(code);
  if (!m) return [];
  return m[1]
    .split(/[,\n]/)
    .map((s) => s.replace(/\/\/.*$/, '').trim())
    .filter(Boolean)
    .map((s) => {
      const [n, t] = s.split(':').map((x) => x.trim());
      return [n, t] as [string, string];
    });
}

describe('kernel specs match their WGSL', async () => {
  const specs = await allSpecs();
  it('finds the specs', () => {
    expect(specs.length).toBeGreaterThan(0);
  });
  for (const [where, spec] of specs) {
    it(`${where} (${spec.file})`, () => {
      const code = readShader(spec.file);
      const decl = wgslBindings(code).sort((a, b) => a.binding - b.binding);
      expect(decl.map((d) => d.binding)).toEqual(spec.bindings.map((_, i) => i));
      expect(decl.map((d) => `${d.name}:${d.access}`)).toEqual(spec.bindings.map((b) => `${b.name}:${b.access}`));
      const fields = wgslStruct(code, spec.params.struct);
      expect(fields, `struct ${spec.params.struct} in ${spec.file}`).toEqual(spec.params.fields.map(([n, t]) => [n, t]));
      const uniform = decl.find((d) => d.access === 'uniform');
      expect(uniform?.name).toBe('params');
      expect(code).toMatch(new RegExp(`var<uniform>\\s*params\\s*:\\s*${spec.params.struct}\\b`));
    });
  }
});
