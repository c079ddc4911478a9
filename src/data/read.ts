/**
 * Dataset files → rows per split. A file is one split (`train`); a folder (a local copy or a
 * Hub snapshot) is searched for .jsonl / .json / .csv / .parquet files and each is assigned to
 * a split by the words of its path (`train`, `validation|valid|val|dev|eval`, `test`, or the
 * configured split names), as Hugging Face `datasets` does for data files.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { DataError } from '../errors.js';
import { parseCsv } from './csv.js';

/** One row as read; `values` is undefined when the row could not be parsed (`error` says why). */
export interface RawRow {
  values: Record<string, unknown> | undefined;
  error?: string;
  /** File relative to the dataset root. */
  file: string;
  /** 1-based: the line of a .jsonl file, the record number elsewhere. */
  row: number;
}

export type SplitName = 'train' | 'validation' | 'test';

export interface RawDataset {
  root: string;
  splits: Partial<Record<SplitName, RawRow[]>>;
  /** Which files went into which split, and files that were skipped. */
  files: { file: string; split: SplitName | 'ignored' }[];
}

export interface SplitNames {
  /** The configured train split name (train_split). */
  train: string;
  /** The configured evaluation split name (eval_split); `validation` also matches valid/val/dev/eval. */
  eval: string;
}

const DATA_EXT = new Set(['.jsonl', '.json', '.csv', '.parquet']);
const EVAL_ALIASES = ['validation', 'valid', 'val', 'dev', 'eval'];

/** The split a data file belongs to, from the words of its relative path. */
export function splitOfPath(relPath: string, names: SplitNames): SplitName | undefined {
  const words = relPath.toLowerCase().split(/[/\\_.\-\s]+/);
  const evalNames = names.eval === 'validation' ? EVAL_ALIASES : [names.eval.toLowerCase()];
  if (words.some((w) => evalNames.includes(w))) return 'validation';
  if (words.includes(names.train.toLowerCase()) || words.includes('train') || words.includes('training')) return 'train';
  if (words.includes('test')) return 'test';
  return undefined;
}

function listDataFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (DATA_EXT.has(extname(name).toLowerCase())) out.push(p);
    }
  };
  walk(root);
  return out;
}

/** Reads a dataset file or folder. */
export async function readDataset(path: string, names: SplitNames): Promise<RawDataset> {
  if (!statSync(path).isDirectory()) {
    if (!DATA_EXT.has(extname(path).toLowerCase())) {
      throw new DataError(`${path}: unsupported dataset file type "${extname(path)}"; use .jsonl, .json, .csv or .parquet.`);
    }
    const file = basename(path);
    const parts = await readFile(path, file);
    if (parts.bySplit !== undefined) return { root: path, splits: parts.bySplit, files: [{ file, split: 'train' }] };
    return { root: path, splits: { train: parts.rows }, files: [{ file, split: 'train' }] };
  }
  const files = listDataFiles(path);
  if (files.length === 0) throw new DataError(`${path}: no .jsonl, .json, .csv or .parquet files in this folder.`);
  const assigned = files.map((f) => ({ path: f, file: relative(path, f), split: splitOfPath(relative(path, f), names) }));
  const anyNamed = assigned.some((a) => a.split !== undefined);
  const splits: Partial<Record<SplitName, RawRow[]>> = {};
  const listing: RawDataset['files'] = [];
  for (const a of assigned) {
    const split: SplitName | 'ignored' = a.split ?? (anyNamed ? 'ignored' : 'train');
    listing.push({ file: a.file, split });
    if (split === 'ignored') continue;
    const parts = await readFile(a.path, a.file);
    (splits[split] ??= []).push(...(parts.rows ?? []));
  }
  return { root: path, splits, files: listing };
}

interface FileRows {
  rows: RawRow[];
  /** A .json file holding `{ "train": [...], "validation": [...] }`. */
  bySplit?: Partial<Record<SplitName, RawRow[]>>;
}

function asRow(value: unknown, file: string, row: number): RawRow {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { values: value as Record<string, unknown>, file, row };
  return { values: undefined, error: `is ${Array.isArray(value) ? 'a list' : JSON.stringify(value)}, not an object`, file, row };
}

async function readFile(path: string, file: string): Promise<FileRows> {
  const ext = extname(path).toLowerCase();
  if (ext === '.parquet') return { rows: await readParquet(path, file) };
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new DataError(`${path}: cannot read (${(e as Error).message}).`, { cause: e });
  }
  let text = decodeUtf8(bytes, path);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (ext === '.csv') return { rows: parseCsv(text, path).rows.map((r, i) => ({ ...r, file, row: i + 1 })) };
  if (ext === '.json') {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return { rows: readJsonLines(text, file) }; // JSON Lines saved as .json
    }
    if (Array.isArray(value)) return { rows: value.map((v, i) => asRow(v, file, i + 1)) };
    if (value !== null && typeof value === 'object') {
      const obj = value as Record<string, unknown>;
      for (const k of ['data', 'rows', 'examples']) if (Array.isArray(obj[k])) return { rows: (obj[k] as unknown[]).map((v, i) => asRow(v, file, i + 1)) };
      const bySplit: Partial<Record<SplitName, RawRow[]>> = {};
      for (const [k, v] of Object.entries(obj)) {
        const split = splitOfPath(k, { train: 'train', eval: 'validation' });
        if (split !== undefined && Array.isArray(v)) bySplit[split] = v.map((x, i) => asRow(x, `${file}#${k}`, i + 1));
      }
      if (Object.keys(bySplit).length > 0) return { rows: bySplit.train ?? [], bySplit };
      return { rows: [asRow(value, file, 1)] };
    }
    throw new DataError(`${path}: expected a list of rows or an object, found ${typeof value}.`);
  }
  return { rows: readJsonLines(text, file) };
}

function readJsonLines(text: string, file: string): RawRow[] {
  const rows: RawRow[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    try {
      rows.push(asRow(JSON.parse(line), file, i + 1));
    } catch (e) {
      rows.push({ values: undefined, error: `is not valid JSON (${(e as Error).message})`, file, row: i + 1 });
    }
  }
  return rows;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The text of a dataset file; invalid UTF-8 is an error naming the line (never U+FFFD trained on). */
export function decodeUtf8(bytes: Uint8Array, path: string): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0x0a) continue;
      try {
        UTF8.decode(bytes.subarray(start, i));
      } catch {
        throw new DataError(`${path}: row ${line} (line ${line}) is not valid UTF-8; re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8) or remove that row.`);
      }
      line++;
      start = i + 1;
    }
    throw new DataError(`${path}: is not valid UTF-8 (a multi-byte sequence is cut off); re-save the file as UTF-8.`);
  }
}

/** A parquet string whose bytes are not UTF-8 (found per row after reading, so the row is named). */
class InvalidUtf8 {}

function firstInvalid(value: unknown, at: string): string | undefined {
  if (value instanceof InvalidUtf8) return at;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = firstInvalid(value[i], `${at}[${i}]`);
      if (found) return found;
    }
  } else if (value !== null && typeof value === 'object' && !ArrayBuffer.isView(value)) {
    for (const [k, v] of Object.entries(value)) {
      const found = firstInvalid(v, at === '' ? k : `${at}.${k}`);
      if (found) return found;
    }
  }
  return undefined;
}

async function readParquet(path: string, file: string): Promise<RawRow[]> {
  let objects: Record<string, unknown>[];
  try {
    objects = await parquetReadObjects({
      file: await asyncBufferFromFile(path),
      parsers: {
        stringFromBytes: (b: Uint8Array) => {
          if (!b) return b;
          try {
            return UTF8.decode(b);
          } catch {
            return new InvalidUtf8() as unknown as string;
          }
        },
      },
      compressors: {
        GZIP: (input: Uint8Array) => new Uint8Array(gunzipSync(input)),
        BROTLI: (input: Uint8Array) => new Uint8Array(brotliDecompressSync(input)),
      },
    });
  } catch (e) {
    throw new DataError(`${path}: cannot read the parquet file (${(e as Error).message}); supported codecs: none, snappy, gzip, brotli.`, { cause: e });
  }
  objects.forEach((o, i) => {
    const column = firstInvalid(o, '');
    if (column !== undefined) throw new DataError(`${path}: row ${i + 1}, column "${column}" is not valid UTF-8; fix that string (re-encode it as UTF-8) or remove the row.`);
  });
  return objects.map((o, i) => asRow(o, file, i + 1));
}
