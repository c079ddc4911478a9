/**
 * A subgroup-matrix shader made compilable where subgroup matrices are missing (lavapipe): the
 * fragment types become one-value structs and the builtins plain functions over the same operands
 * (`subgroupMatrixLoad<T>(&a, …)` → `smLoad_T_a(&a, …)`, reading the array a is declared with), so
 * that WGSL's checks — syntax, types, the uniformity of every barrier — run on the rest of the
 * shader. The stand-ins compute nothing meaningful; they only have the builtins' signatures.
 */
import { ShaderError } from '../../src/errors.js';

const MATRIX_ALIAS = /^alias (\w+) = subgroup_matrix_(left|right|result)<(\w+), \d+, \d+>;$/gm;

/** The declared type of module-scope variable `name` and the pointer type to it (`ptr<AS, T[, access]>`). */
function declaration(code: string, name: string): { type: string; ptr: string } {
  const m = new RegExp(`var<(workgroup|storage)(?:,\\s*(read|read_write))?>\\s+${name}\\s*:\\s*([^;]+);`).exec(code);
  if (!m) throw new ShaderError(`sgm stubs: no module-scope declaration of '${name}' (a subgroup-matrix load or store names it)`);
  const type = m[3]!.trim();
  const ptr = m[1] === 'workgroup' ? `ptr<workgroup, ${type}>` : `ptr<storage, ${type}, ${m[2] ?? 'read'}>`;
  return { type, ptr };
}

const elementOf = (type: string): string => /^array<\s*(\w+)/.exec(type)?.[1] ?? type;

export function stubSubgroupMatrices(source: string): string {
  let code = source.replace(/^enable chromium_experimental_subgroup_matrix;$/m, '').replace(/^diagnostic\(off, chromium\.subgroup_matrix_uniformity\);$/m, '');
  const kinds = new Map<string, string>(); // kind → alias
  code = code.replace(MATRIX_ALIAS, (_all, alias: string, kind: string, elem: string) => {
    kinds.set(kind, alias);
    return `struct ${alias} { x: ${elem} }`;
  });
  const stubs = new Set<string>();
  code = code.replace(/subgroupMatrixLoad<(\w+)>\(&(\w+)/g, (_all, t: string, arr: string) => {
    const d = declaration(source, arr);
    stubs.add(`fn smLoad_${t}_${arr}(p: ${d.ptr}, off: u32, cm: bool, stride: u32) -> ${t} { return ${t}(${t}().x + (*p)[off + select(0u, stride, cm)]); }`);
    return `smLoad_${t}_${arr}(&${arr}`;
  });
  const result = kinds.get('result');
  code = code.replace(/subgroupMatrixStore\(&(\w+)/g, (_all, arr: string) => {
    const d = declaration(source, arr);
    if (!result) throw new ShaderError(`sgm stubs: a store into '${arr}' but no subgroup_matrix_result alias`);
    stubs.add(`fn smStore_${arr}(p: ${d.ptr}, off: u32, v: ${result}, cm: bool, stride: u32) { (*p)[off + select(0u, stride, cm)] = ${elementOf(d.type)}(v.x); }`);
    return `smStore_${arr}(&${arr}`;
  });
  if (code.includes('subgroupMatrixMultiplyAccumulate(')) {
    const [l, r] = [kinds.get('left'), kinds.get('right')];
    if (!l || !r || !result) throw new ShaderError('sgm stubs: a multiply-accumulate without left, right and result aliases');
    stubs.add(`fn smMma(a: ${l}, b: ${r}, c: ${result}) -> ${result} { return ${result}(c.x + f32(a.x) * f32(b.x)); }`);
    code = code.replaceAll('subgroupMatrixMultiplyAccumulate(', 'smMma(');
  }
  const left = /subgroup_?[mM]atrix\w*/.exec(code.replace(/^\s*\/\/.*$/gm, ''));
  if (left) throw new ShaderError(`sgm stubs: '${left[0]}' has no stand-in; add one to tests/helpers/sgm-stubs.ts`);
  return `${code}\n${[...stubs].join('\n')}\n`;
}
