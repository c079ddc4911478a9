/**
 * Commands the program prints for the user to run (a resume hint, the real fine-tune, an export
 * redo). They must work as printed from the folder the user is in: this package's scripts and
 * configs are named relative to that folder when they lie below it, absolutely otherwise, and every
 * word is quoted for a POSIX shell where it needs to be.
 */
import { join, relative } from 'node:path';
import { packageRoot } from './paths.js';

/** `p` as seen from `cwd`: relative when below cwd, else as given (absolute); not quoted. */
export function pathFrom(p: string, cwd: string = process.cwd()): string {
  const r = relative(cwd, p);
  return r !== '' && !r.startsWith('..') && !r.startsWith('/') ? r : p;
}

/** `p` as the user should type it from `cwd`: pathFrom, shell-quoted. */
export function shownPath(p: string, cwd: string = process.cwd()): string {
  return shellWord(pathFrom(p, cwd));
}

/** One word for a POSIX shell: as is when it holds only safe characters, else single-quoted. */
export function shellWord(s: string): string {
  return /^[\w./@:+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `node <this package's train.js> args…`, runnable from `cwd`; `args` are shell-quoted here. */
export function trainCommand(args: readonly string[], cwd: string = process.cwd(), root: string = packageRoot()): string {
  return ['node', shownPath(join(root, 'train.js'), cwd), ...args.map(shellWord)].join(' ');
}

/** `node train.js --resume DIR` for a run folder or checkpoint, runnable from `cwd`. */
export function resumeCommand(dir: string, cwd: string = process.cwd(), root: string = packageRoot()): string {
  return trainCommand(['--resume', pathFrom(dir, cwd)], cwd, root);
}

/** A config bundled with this package (configs/NAME) as seen from `cwd` (pathFrom: not quoted). */
export function bundledConfigPath(name: string, cwd: string = process.cwd(), root: string = packageRoot()): string {
  return pathFrom(join(root, 'configs', name), cwd);
}
