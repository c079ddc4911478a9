import { ShaderError } from '../errors.js';

/**
 * WGSL has no includes; shared pieces (shaders/lib/*.wgsl: the NF4 codebook, the grid fold) are
 * pulled into a shader by a line of its own
 *
 *   // #include "lib/nf4_codebook.wgsl"
 *
 * which is replaced by that file's text (itself composed the same way). Paths are relative to
 * shaders/. A file included twice along different paths is inserted once (its module-scope
 * declarations would otherwise clash); an include cycle is a ShaderError naming the chain. This is
 * the one place shader text is put together; nothing else edits WGSL text.
 */
const INCLUDE = /^[ \t]*\/\/[ \t]*#include[ \t]+"([^"]+)"[ \t]*$/;

/** The text of `file` with every include resolved; `read(path)` returns a shaders/-relative file's text. */
export function composeShader(file: string, read: (path: string) => string): string {
  const included = new Set<string>();
  const visit = (path: string, chain: readonly string[]): string => {
    included.add(path);
    const lines = read(path).split('\n');
    return lines
      .map((line, i) => {
        const m = INCLUDE.exec(line);
        if (!m) return line;
        const target = m[1]!;
        if (!/^[A-Za-z0-9_][A-Za-z0-9_/.-]*\.wgsl$/.test(target) || target.includes('..')) {
          throw new ShaderError(`${path}:${i + 1}: #include "${target}" must name a .wgsl file below shaders/ (e.g. "lib/nf4_codebook.wgsl")`);
        }
        if (target === path || chain.includes(target)) {
          throw new ShaderError(`shader include cycle: ${[...chain, path, target].join(' → ')}; remove one of these #include lines`);
        }
        if (included.has(target)) return `// (${target} already included)`;
        return visit(target, [...chain, path]);
      })
      .join('\n');
  };
  return visit(file, []);
}

/** The shaders/-relative files `text` includes directly (for tests and tools). */
export function shaderIncludes(text: string): string[] {
  return text.split('\n').flatMap((line) => {
    const m = INCLUDE.exec(line);
    return m ? [m[1]!] : [];
  });
}
