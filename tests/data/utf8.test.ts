import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readDataset } from '../../src/data/read.js';
import { runValidate } from '../../src/cli/validate.js';

/**
 * Invalid UTF-8 in a dataset file is an error naming the file and the row (it used to be decoded
 * to U+FFFD and trained on), for every format; `validate` reports it.
 */
const names = { train: 'train', eval: 'validation' };
const FIXTURES = join(import.meta.dirname, 'fixtures');
const good = (i: number) => JSON.stringify({ instruction: `scene ${i}`, response: `a slow pan over scene ${i}` });
const LATIN1 = Buffer.from([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1: 0xE9 alone is not UTF-8

function folderWith(name: string, content: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'utf8-'));
  writeFileSync(join(dir, name), content);
  return dir;
}

const jsonl = Buffer.concat([Buffer.from(`${good(1)}\n${good(2)}\n{"instruction": "`), LATIN1, Buffer.from(`", "response": "x"}\n${good(4)}\n`)]);

describe('invalid UTF-8 in dataset files', () => {
  it.each([
    ['train.jsonl', jsonl, 3],
    ['train.json', Buffer.concat([Buffer.from(`[\n${good(1)},\n{"instruction": "`), LATIN1, Buffer.from('", "response": "x"}\n]\n')]), 3],
    ['train.csv', Buffer.concat([Buffer.from('instruction,response\na,b\n'), LATIN1, Buffer.from(',d\n')]), 3],
  ])('%s: an error naming the file and the row', async (name, content, row) => {
    const dir = folderWith(name, content);
    await expect(readDataset(dir, names)).rejects.toThrow(new RegExp(`${name}: row ${row} \\(line ${row}\\) is not valid UTF-8`));
  });

  it('a cut-off multi-byte sequence at the end of a file is an error too', async () => {
    const dir = folderWith('train.jsonl', Buffer.concat([Buffer.from(`${good(1)}\n`), Buffer.from([0xe2, 0x82])]));
    await expect(readDataset(dir, names)).rejects.toThrow(/train\.jsonl: row 2 \(line 2\) is not valid UTF-8/);
  });

  it('valid UTF-8 (with a BOM and non-ASCII text) still reads', async () => {
    const dir = folderWith('train.jsonl', Buffer.from(`\ufeff${JSON.stringify({ instruction: 'café', response: 'ünïcødé — 日本' })}\n`));
    const ds = await readDataset(dir, names);
    expect(JSON.stringify(ds)).toContain('ünïcødé — 日本');
  });

  it('parquet: a string column with bytes that are not UTF-8 names the file, row and column', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'utf8-parquet-'));
    cpSync(join(FIXTURES, 'hf-parquet'), dir, { recursive: true });
    const path = join(dir, 'data/train-00000-of-00001.parquet');
    const bytes = readFileSync(path);
    const word = Buffer.from('lighthouse');
    let at = bytes.indexOf(word);
    expect(at).toBeGreaterThan(0); // a snappy literal of that pyarrow fixture
    while (at >= 0) {
      bytes[at] = 0xff;
      at = bytes.indexOf(word, at + 1);
    }
    writeFileSync(path, bytes);
    await expect(readDataset(dir, names)).rejects.toThrow(/train-00000-of-00001\.parquet: row 1, column "messages\[\d\]\.content" is not valid UTF-8/);
  });

  it('validate reports it and exits 1', async () => {
    const dir = folderWith('train.jsonl', jsonl);
    let out = '';
    let err = '';
    const code = await runValidate(['--dataset', dir], { env: { HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent-hf-home' }, out: (s) => (out += s + '\n'), err: (s) => (err += s + '\n') });
    expect(code).toBe(1);
    expect(out + err).toMatch(/train\.jsonl: row 3 \(line 3\) is not valid UTF-8/);
  });
});
