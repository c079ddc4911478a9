import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The one pattern every writer's temporary names follow: `<final name>.<kind>-<pid>`, where kind is
 * `tmp` (being written), `old` (the previous version, moved away while replacing) or `deleting`
 * (being removed). A temporary may itself hold a temporary (`checkpoint-6.tmp-41.tmp-41`: the adapter
 * folder written inside a checkpoint's temporary folder). removeStaleTemporaries recognises all of
 * them, so a killed writer (checkpoint, export, adapter, report) leaves nothing that survives the next
 * start-up in that folder.
 */
export type TemporaryKind = 'tmp' | 'old' | 'deleting';

/** `<path>.<kind>-<pid>` — the name a writer uses before renaming to `path`. */
export function temporaryName(path: string, kind: TemporaryKind = 'tmp', pid: number = process.pid): string {
  return `${path}.${kind}-${pid}`;
}

const SUFFIX = /\.(?:tmp|old|deleting)-(\d+)/g;
const TEMPORARY = /^.+?(?:\.(?:tmp|old|deleting)-\d+)+$/;

/** The process ids in a temporary name (one per nesting level), or null when `name` is not one. */
export function temporaryOwners(name: string): number[] | null {
  if (!TEMPORARY.test(name)) return null;
  const tail = name.slice(name.search(/(?:\.(?:tmp|old|deleting)-\d+)+$/));
  return [...tail.matchAll(SUFFIX)].map((m) => Number(m[1]));
}

/**
 * Removes the entries of `dir` under a temporary name whose writers no longer run (a crash, a kill,
 * a second Ctrl-C while writing). Entries of a live process — this one, or another run writing into
 * the same folder — are left alone. Returns the removed names.
 */
export async function removeStaleTemporaries(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const owners = temporaryOwners(name);
    if (!owners || owners.some((pid) => pid === process.pid || processAlive(pid))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}
