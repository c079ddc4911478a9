/**
 * Commands the program prints for the user to run (a resume hint, the real fine-tune, an export
 * redo). They must work as printed from the folder the user is in: this package's scripts and
 * configs are named relative to that folder when they lie below it, absolutely otherwise, and every
 * word is quoted for a POSIX shell where it needs to be.
 */
import { join, relative } from 'node:path';
import { packageRoot } from './paths.js';

/** `p` as the user should type it from `cwd`: relative when below cwd, else as given (absolute). */
export function shownPath(p: string, cwd: string = process.cwd()): string {
  const r = relative(cwd, p);
  return shellWord(r !== '' && !r.startsWith('..') && !r.startsWith('/') ? r : p);
}

/** One word for a POSIX shell: as is when it holds only safe characters, else single-quoted. */
export function shellWord(s: string): string {
  return /^[\w./@:+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `node <this package's train.js> args…`, runnable from `cwd`; `args` are shell-quoted. */
export function trainCommand(args: readonly string[], cwd: string = process.cwd(), root: string = packageRoot()): string {
  return ['node', shownPath(join(root, 'train.js'), cwd), ...args.map(shellWord)].join(' ');
}

/** `node train.js --resume DIR` for a run folder or checkpoint, runnable from `cwd`. */
export function resumeCommand(dir: string, cwd: string = process.cwd(), root: string = packageRoot()): string {
  return ['node', shownPath(join(root, 'train.js'), cwd), '--resume', shownPath(dir, cwd)].join(' ');
}

/** A config bundled with this package (configs/NAME), as the user should type it from `cwd`. */
export function bundledConfigPath(name: string, cwd: string = process.cwd(), root: string = packageRoot()): string {
  return shownPath(join(root, 'configs', name), cwd);
}
