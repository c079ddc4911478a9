import { ExportError } from '../errors.js';

/**
 * A small evaluator of Go's text/template, the subset Ollama TEMPLATEs use, so that tests can render
 * a Modelfile's TEMPLATE and compare it with the Jinja rendering used in training:
 *   text; {{ pipeline }}; {{- and -}} whitespace trimming; {{/* comments *\/}};
 *   {{ if p }} … {{ else if p }} … {{ else }} … {{ end }}; {{ range p }} / {{ range $i, $v := p }} … {{ end }};
 *   {{ $x := p }} and {{ $x = p }};
 *   operands .Field.Sub, ., $, $x.Field, "strings" (Go escapes), numbers, true, false, ( pipelines );
 *   functions eq, ne, and, or, not, len, slice, index.
 * Truth follows Go: false, 0, "", nil and empty lists and maps are false. Anything else is refused
 * with an ExportError naming the position.
 */

type Value = unknown;

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'output'; expr: Expr }
  | { kind: 'assign'; name: string; expr: Expr; declare: boolean }
  | { kind: 'if'; branches: { cond: Expr; body: Node[] }[]; otherwise: Node[] }
  | { kind: 'range'; keyVar?: string; valueVar?: string; expr: Expr; body: Node[]; otherwise: Node[] };

type Expr =
  | { kind: 'field'; base: 'dot' | 'root' | string; path: string[] }
  | { kind: 'literal'; value: Value }
  | { kind: 'call'; fn: string; args: Expr[] };

interface Action {
  body: string;
  at: number;
}

/** Splits the template into text and actions, applying the trim markers. */
function lex(src: string): (string | Action)[] {
  const out: (string | Action)[] = [];
  let i = 0;
  let trimNext = false;
  while (i < src.length) {
    const open = src.indexOf('{{', i);
    let text = open < 0 ? src.slice(i) : src.slice(i, open);
    if (trimNext) text = text.replace(/^[ \t\r\n]+/, '');
    if (open < 0) {
      out.push(text);
      break;
    }
    let start = open + 2;
    if (src.startsWith('- ', start) || src.startsWith('-\n', start) || src.startsWith('-\t', start)) {
      text = text.replace(/[ \t\r\n]+$/, '');
      start += 1;
    }
    out.push(text);
    const close = findClose(src, start);
    let end = close;
    trimNext = false;
    if (src[close - 1] === '-' && /[ \t\r\n]/.test(src[close - 2] ?? '')) {
      trimNext = true;
      end = close - 1;
    }
    out.push({ body: src.slice(start, end).trim(), at: open });
    i = close + 2;
  }
  return out;
}

/** Index of the `}}` closing the action starting at `from` (skipping string literals). */
function findClose(src: string, from: number): number {
  let i = from;
  while (i < src.length) {
    if (src[i] === '"') {
      i++;
      while (i < src.length && src[i] !== '"') i += src[i] === '\\' ? 2 : 1;
    } else if (src.startsWith('}}', i)) {
      return i;
    }
    i++;
  }
  throw new ExportError(`template: unclosed action at character ${from - 2}`);
}

/** Tokens of an action body: words, strings, parentheses, `:=`, `=`, `,`. */
function tokenize(body: string, at: number): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < body.length) {
    const c = body[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < body.length && body[j] !== '"') j += body[j] === '\\' ? 2 : 1;
      tokens.push(body.slice(i, j + 1));
      i = j + 1;
    } else if (c === '(' || c === ')' || c === ',') {
      tokens.push(c);
      i++;
    } else if (body.startsWith(':=', i)) {
      tokens.push(':=');
      i += 2;
    } else if (c === '=') {
      tokens.push('=');
      i++;
    } else {
      let j = i;
      while (j < body.length && !/[\s(),=]/.test(body[j]) && !body.startsWith(':=', j)) j++;
      tokens.push(body.slice(i, j));
      i = j;
    }
  }
  if (tokens.length === 0) throw new ExportError(`template: empty action at character ${at}`);
  return tokens;
}

const FUNCTIONS = new Set(['eq', 'ne', 'and', 'or', 'not', 'len', 'slice', 'index']);

/** Parses a pipeline (one command: a function call or a single operand). */
function parseExpr(tokens: string[], at: number): Expr {
  let pos = 0;
  const operand = (): Expr => {
    const t = tokens[pos++];
    if (t === undefined) throw new ExportError(`template: missing operand at character ${at}`);
    if (t === '(') {
      const inner: string[] = [];
      let depth = 1;
      while (pos < tokens.length) {
        const u = tokens[pos++];
        if (u === '(') depth++;
        if (u === ')' && --depth === 0) break;
        inner.push(u);
      }
      if (depth !== 0) throw new ExportError(`template: unbalanced parentheses at character ${at}`);
      return parseExpr(inner, at);
    }
    if (t.startsWith('"')) return { kind: 'literal', value: JSON.parse(t) as string };
    if (t === 'true' || t === 'false') return { kind: 'literal', value: t === 'true' };
    if (/^-?\d+(\.\d+)?$/.test(t)) return { kind: 'literal', value: Number(t) };
    if (t === '.') return { kind: 'field', base: 'dot', path: [] };
    if (t.startsWith('.')) return { kind: 'field', base: 'dot', path: t.slice(1).split('.') };
    if (t.startsWith('$')) {
      const [name, ...path] = t.split('.');
      return { kind: 'field', base: name === '$' ? 'root' : name, path };
    }
    throw new ExportError(`template: unknown operand "${t}" at character ${at}`);
  };
  let expr: Expr;
  if (FUNCTIONS.has(tokens[0])) {
    const fn = tokens[pos++];
    const args: Expr[] = [];
    while (pos < tokens.length) args.push(operand());
    expr = { kind: 'call', fn, args };
  } else {
    expr = operand();
    if (pos < tokens.length) throw new ExportError(`template: unexpected "${tokens[pos]}" at character ${at} (only eq, ne, and, or, not, len, slice, index are supported)`);
  }
  return expr;
}

/** Parses the template into a tree. */
export function parseGoTemplate(src: string): Node[] {
  const items = lex(src);
  let pos = 0;
  const block = (terminators: string[]): { nodes: Node[]; end: string; endAction?: Action } => {
    const nodes: Node[] = [];
    while (pos < items.length) {
      const item = items[pos++];
      if (typeof item === 'string') {
        if (item !== '') nodes.push({ kind: 'text', text: item });
        continue;
      }
      const body = item.body;
      if (body.startsWith('/*')) continue;
      const word = body.split(/\s+/)[0];
      if (word === 'end' || word === 'else') {
        if (!terminators.includes(word)) throw new ExportError(`template: unexpected {{ ${body} }} at character ${item.at}`);
        return { nodes, end: word, endAction: item };
      }
      if (word === 'if') {
        const branches: { cond: Expr; body: Node[] }[] = [];
        let cond = parseExpr(tokenize(body.slice(2), item.at), item.at);
        let otherwise: Node[] = [];
        for (;;) {
          const b = block(['else', 'end']);
          branches.push({ cond, body: b.nodes });
          if (b.end === 'end') break;
          const rest = b.endAction!.body.slice(4).trim();
          if (rest.startsWith('if ')) {
            cond = parseExpr(tokenize(rest.slice(3), b.endAction!.at), b.endAction!.at);
            continue;
          }
          otherwise = block(['end']).nodes;
          break;
        }
        nodes.push({ kind: 'if', branches, otherwise });
      } else if (word === 'range') {
        const tokens = tokenize(body.slice(5), item.at);
        let keyVar: string | undefined;
        let valueVar: string | undefined;
        const decl = tokens.indexOf(':=');
        let exprTokens = tokens;
        if (decl >= 0) {
          const vars = tokens.slice(0, decl).filter((t) => t !== ',');
          [keyVar, valueVar] = vars.length === 2 ? vars : [undefined, vars[0]];
          exprTokens = tokens.slice(decl + 1);
        }
        const b = block(['else', 'end']);
        const otherwise = b.end === 'else' ? block(['end']).nodes : [];
        nodes.push({ kind: 'range', keyVar, valueVar, expr: parseExpr(exprTokens, item.at), body: b.nodes, otherwise });
      } else {
        const tokens = tokenize(body, item.at);
        if (tokens[0].startsWith('$') && (tokens[1] === ':=' || tokens[1] === '=')) {
          nodes.push({ kind: 'assign', name: tokens[0], declare: tokens[1] === ':=', expr: parseExpr(tokens.slice(2), item.at) });
        } else {
          nodes.push({ kind: 'output', expr: parseExpr(tokens, item.at) });
        }
      }
    }
    if (terminators.length > 0) throw new ExportError(`template: missing {{ end }}`);
    return { nodes, end: '' };
  };
  return block([]).nodes;
}

function truth(v: Value): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

function show(v: Value): string {
  if (v === undefined || v === null) return '<no value>';
  return typeof v === 'string' ? v : String(v);
}

/** Renders `src` with `data` as the root (`.` and `$`). */
export function renderGoTemplate(src: string, data: Record<string, unknown>): string {
  return evaluate(parseGoTemplate(src), data);
}

export function evaluate(nodes: Node[], data: Record<string, unknown>): string {
  const scopes: Map<string, Value>[] = [new Map<string, Value>([['$', data]])];
  const lookup = (name: string): Value => {
    for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i].has(name)) return scopes[i].get(name);
    throw new ExportError(`template: undefined variable ${name}`);
  };
  const set = (name: string, v: Value, declare: boolean): void => {
    if (declare) {
      scopes[scopes.length - 1].set(name, v);
      return;
    }
    for (let i = scopes.length - 1; i >= 0; i--) {
      if (scopes[i].has(name)) {
        scopes[i].set(name, v);
        return;
      }
    }
    throw new ExportError(`template: assignment to undeclared variable ${name}`);
  };
  const field = (base: Value, path: string[]): Value => {
    let v = base;
    for (const p of path) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
    return v;
  };
  const value = (e: Expr, dot: Value): Value => {
    switch (e.kind) {
      case 'literal':
        return e.value;
      case 'field':
        return field(e.base === 'dot' ? dot : e.base === 'root' ? data : lookup(e.base), e.path);
      case 'call': {
        const args = e.args.map((a) => value(a, dot));
        switch (e.fn) {
          case 'eq':
            return args.slice(1).some((a) => a === args[0]);
          case 'ne':
            return args[0] !== args[1];
          case 'and':
            return args.find((a) => !truth(a)) ?? args[args.length - 1];
          case 'or':
            return args.find((a) => truth(a)) ?? args[args.length - 1];
          case 'not':
            return !truth(args[0]);
          case 'len':
            return (args[0] as { length: number }).length;
          case 'slice':
            return (args[0] as unknown[]).slice(args[1] as number, args[2] as number | undefined);
          case 'index':
            return (args[0] as Record<string | number, unknown>)[args[1] as string | number];
        }
        throw new ExportError(`template: unknown function ${e.fn}`);
      }
    }
  };
  const run = (list: Node[], dot: Value): string => {
    let out = '';
    for (const n of list) {
      switch (n.kind) {
        case 'text':
          out += n.text;
          break;
        case 'output':
          out += show(value(n.expr, dot));
          break;
        case 'assign':
          set(n.name, value(n.expr, dot), n.declare);
          break;
        case 'if': {
          const hit = n.branches.find((b) => truth(value(b.cond, dot)));
          scopes.push(new Map());
          out += run(hit ? hit.body : n.otherwise, dot);
          scopes.pop();
          break;
        }
        case 'range': {
          const list = value(n.expr, dot);
          const items = Array.isArray(list) ? list : [];
          if (items.length === 0) {
            out += run(n.otherwise, dot);
            break;
          }
          items.forEach((item, i) => {
            const scope = new Map<string, Value>();
            if (n.keyVar) scope.set(n.keyVar, i);
            if (n.valueVar) scope.set(n.valueVar, item);
            scopes.push(scope);
            out += run(n.body, item);
            scopes.pop();
          });
          break;
        }
      }
    }
    return out;
  };
  return run(nodes, data);
}
