/**
 * Byte sizes of a WGSL module's workgroup variables, at the defaults of its override constants —
 * for the alignment rule of the subgroup-matrix shaders (tests/kernels/workgroup-alignment.test.ts).
 * Reads only what those shaders use: module-scope `const` / `override` integers built from
 * literals, names, + − * / %, parentheses, min and max; scalar, vector, array, atomic and struct
 * types with WGSL's layout rules (sizes rounded up to the type's alignment). Anything else throws,
 * naming the declaration, so a shader this reader cannot size fails the test instead of passing it.
 */

export interface WorkgroupVar {
  readonly name: string;
  readonly type: string;
  readonly bytes: number;
}

interface Layout {
  readonly size: number;
  readonly align: number;
}

const SCALARS: Record<string, number> = { f16: 2, f32: 4, i32: 4, u32: 4, bool: 4 };

/** Every `var<workgroup>` of `text` with its size in bytes. */
export function workgroupVars(text: string): WorkgroupVar[] {
  const code = text.replace(/\/\/[^\n]*/g, '');
  const constants = moduleConstants(code);
  const structs = moduleStructs(code);
  const out: WorkgroupVar[] = [];
  for (const m of code.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)) {
    const type = m[2]!.trim();
    out.push({ name: m[1]!, type, bytes: layoutOf(type, constants, structs).size });
  }
  return out;
}

/** Names of the workgroup variables that `subgroupMatrixLoad` / `subgroupMatrixStore` take in `text`. */
export function matrixWorkgroupVars(text: string): string[] {
  const wg = new Set([...text.replace(/\/\/[^\n]*/g, '').matchAll(/var<workgroup>\s+(\w+)/g)].map((m) => m[1]!));
  const used = new Set<string>();
  for (const m of text.matchAll(/subgroupMatrix(?:Load<[^>]*>|Store)\s*\(\s*&(\w+)/g)) if (wg.has(m[1]!)) used.add(m[1]!);
  return [...used].sort();
}

function moduleConstants(code: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of code.matchAll(/^(?:const|override)\s+(\w+)\s*(?::\s*\w+)?\s*=\s*([^;]+);/gm)) out.set(m[1]!, m[2]!.trim());
  return out;
}

function moduleStructs(code: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of code.matchAll(/struct\s+(\w+)\s*\{([^}]*)\}/g)) {
    const members = m[2]!.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    out.set(m[1]!, members.map((s) => s.replace(/^@\w+(\([^)]*\))?\s*/, '').split(':').slice(1).join(':').trim()));
  }
  return out;
}

function layoutOf(type: string, constants: Map<string, string>, structs: Map<string, string[]>): Layout {
  const t = type.replace(/\s+/g, '');
  if (SCALARS[t] !== undefined) return { size: SCALARS[t]!, align: SCALARS[t]! };
  let m = /^atomic<(u32|i32)>$/.exec(t);
  if (m) return { size: 4, align: 4 };
  m = /^vec([234])<(\w+)>$/.exec(t);
  if (m) {
    const n = Number(m[1]);
    const s = SCALARS[m[2]!];
    if (s === undefined) throw new Error(`workgroup type ${type}: unknown component ${m[2]}`);
    return { size: n * s, align: (n === 2 ? 2 : 4) * s };
  }
  if (t.startsWith('array<') && t.endsWith('>')) {
    const [el, count] = splitTopLevel(t.slice(6, -1));
    if (count === undefined) throw new Error(`workgroup type ${type}: an array without a length`);
    const l = layoutOf(el!, constants, structs);
    return { size: roundUp(l.size, l.align) * evaluate(count, constants, []), align: l.align };
  }
  const members = structs.get(t);
  if (members) {
    let offset = 0;
    let align = 1;
    for (const mt of members) {
      const l = layoutOf(mt, constants, structs);
      offset = roundUp(offset, l.align) + l.size;
      align = Math.max(align, l.align);
    }
    return { size: roundUp(offset, align), align };
  }
  throw new Error(`workgroup type ${type}: not a type this reader can size`);
}

/** `s` split at its commas outside <> and (). */
function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '<' || c === '(') depth++;
    else if (c === '>' || c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}

function roundUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}

/** The value of an integer constant expression; `chain` guards against cycles. */
function evaluate(expr: string, constants: Map<string, string>, chain: readonly string[]): number {
  const tokens = expr.match(/\d+[ui]?|\w+|[-+*/%(),]/g) ?? [];
  let at = 0;
  const peek = () => tokens[at];
  const next = () => tokens[at++];
  const primary = (): number => {
    const tok = next();
    if (tok === undefined) throw new Error(`constant expression "${expr}" ends early`);
    if (tok === '(') {
      const v = sum();
      if (next() !== ')') throw new Error(`constant expression "${expr}": missing )`);
      return v;
    }
    if (tok === '-') return -primary();
    if (/^\d+[ui]?$/.test(tok)) return Number(tok.replace(/[ui]$/, ''));
    if (tok === 'min' || tok === 'max') {
      if (next() !== '(') throw new Error(`constant expression "${expr}": ${tok} without (`);
      const a = sum();
      if (next() !== ',') throw new Error(`constant expression "${expr}": ${tok} needs two arguments`);
      const b = sum();
      if (next() !== ')') throw new Error(`constant expression "${expr}": missing )`);
      return tok === 'min' ? Math.min(a, b) : Math.max(a, b);
    }
    const def = constants.get(tok);
    if (def === undefined) throw new Error(`constant expression "${expr}": unknown name ${tok}`);
    if (chain.includes(tok)) throw new Error(`constant ${tok} refers to itself`);
    return evaluate(def, constants, [...chain, tok]);
  };
  const product = (): number => {
    let v = primary();
    for (let op = peek(); op === '*' || op === '/' || op === '%'; op = peek()) {
      next();
      const r = primary();
      v = op === '*' ? v * r : op === '/' ? Math.trunc(v / r) : v % r;
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    for (let op = peek(); op === '+' || op === '-'; op = peek()) {
      next();
      const r = product();
      v = op === '+' ? v + r : v - r;
    }
    return v;
  };
  const v = sum();
  if (at !== tokens.length) throw new Error(`constant expression "${expr}": unexpected ${tokens[at]}`);
  return v;
}
