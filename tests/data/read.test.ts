import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDataset, splitOfPath } from '../../src/data/read.js';
import { parseCsvRecords } from '../../src/data/csv.js';
import { convertRows, detectFormat, resolveFormat, type FormatOptions } from '../../src/data/formats.js';
import { checkBadRows, loadExamples } from '../../src/data/dataset.js';
import { chooseEvalSplit } from '../../src/data/split.js';
import { resolveConfig } from '../../src/config/load.js';
import { hubOptionsFromEnv } from '../../src/data/hub.js';
import { ConfigError, DataError } from '../../src/errors.js';

const FIXTURES = new URL('./fixtures/', import.meta.url).pathname;
const names = { train: 'train', eval: 'validation' };
const chatOpts: FormatOptions = { format: 'auto', textField: 'text', instructionFormat: 'chat', systemPrompt: 'SYS', userPrefix: 'Generate a cinematic video prompt for: ' };
const offlineHub = hubOptionsFromEnv({ HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent-hf-home' });

function tempDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'ds-'));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

describe('reading dataset files', () => {
  it('assigns files to splits by the words of their paths', () => {
    expect(splitOfPath('train.jsonl', names)).toBe('train');
    expect(splitOfPath('data/train-00000-of-00001.parquet', names)).toBe('train');
    expect(splitOfPath('data/validation-00000-of-00001.parquet', names)).toBe('validation');
    expect(splitOfPath('dev.csv', names)).toBe('validation');
    expect(splitOfPath('my_valid_rows.json', names)).toBe('validation');
    expect(splitOfPath('test.jsonl', names)).toBe('test');
    expect(splitOfPath('trainer_notes.jsonl', names)).toBeUndefined();
    expect(splitOfPath('sft.jsonl', { train: 'sft', eval: 'heldout' })).toBe('train');
    expect(splitOfPath('heldout.jsonl', { train: 'sft', eval: 'heldout' })).toBe('validation');
  });

  it('reads .jsonl with line numbers for unparsable rows', async () => {
    const dir = tempDir({ 'train.jsonl': '{"text": "a"}\n\n{"text": \n[1, 2]\n{"text": "b"}\n' });
    const ds = await readDataset(join(dir, 'train.jsonl'), names);
    const rows = ds.splits.train!;
    expect(rows.map((r) => r.row)).toEqual([1, 3, 4, 5]);
    expect(rows[1].values).toBeUndefined();
    expect(rows[1].error).toMatch(/not valid JSON/);
    expect(rows[2].error).toMatch(/a list, not an object/);
    expect(rows[3].values).toEqual({ text: 'b' });
  });

  it('reads .json as a list, as {split: rows}, as {data: rows} and as JSON Lines', async () => {
    const dir = tempDir({
      'a.json': '[{"text": "x"}, {"text": "y"}]',
      'b.json': '{"train": [{"text": "x"}], "validation": [{"text": "v"}]}',
      'c.json': '{"data": [{"text": "z"}]}',
      'd.json': '{"text": "l1"}\n{"text": "l2"}\n',
    });
    expect((await readDataset(join(dir, 'a.json'), names)).splits.train!.length).toBe(2);
    const b = await readDataset(join(dir, 'b.json'), names);
    expect(b.splits.validation![0].values).toEqual({ text: 'v' });
    expect((await readDataset(join(dir, 'c.json'), names)).splits.train![0].values).toEqual({ text: 'z' });
    expect((await readDataset(join(dir, 'd.json'), names)).splits.train!.length).toBe(2);
  });

  it('parses RFC 4180 CSV: quotes, doubled quotes, commas and newlines inside fields, CRLF', async () => {
    expect(parseCsvRecords('a,b\r\n"x, ""y""","line1\nline2"\r\n', 't.csv')).toEqual([
      ['a', 'b'],
      ['x, "y"', 'line1\nline2'],
    ]);
    const dir = tempDir({ 'train.csv': 'instruction,response\n"a fox","Low tracking shot, frost"\nonly-one-field\n' });
    const rows = (await readDataset(join(dir, 'train.csv'), names)).splits.train!;
    expect(rows[0].values).toEqual({ instruction: 'a fox', response: 'Low tracking shot, frost' });
    expect(rows[1]).toMatchObject({ row: 2, values: undefined, error: 'has 1 fields, the header has 2' });
    expect(() => parseCsvRecords('a\n"open', 'bad.csv')).toThrow(DataError);
  });

  it('reads a Hub-layout parquet folder (snappy train, gzip validation, list<struct> messages) written by pyarrow', async () => {
    const ds = await readDataset(join(FIXTURES, 'hf-parquet'), names);
    expect(ds.files).toEqual([
      { file: 'data/train-00000-of-00001.parquet', split: 'train' },
      { file: 'data/validation-00000-of-00001.parquet', split: 'validation' },
    ]);
    expect(ds.splits.train!.length).toBe(4);
    expect(ds.splits.validation!.length).toBe(1);
    expect(resolveFormat(ds.splits.train!, chatOpts, 'fixture')).toBe('messages');
    const { examples, bad } = convertRows(ds.splits.train!, 'train', 'messages', chatOpts);
    expect(examples.length).toBe(3);
    expect(bad).toEqual([{ split: 'train', file: 'data/train-00000-of-00001.parquet', row: 4, reason: '"messages"[1].content is missing' }]);
    const third = examples[2].example;
    expect(third.kind === 'chat' && third.messages[1].content).toBe('Ünïcödé 東京 at night'.normalize('NFC'));
    // The system message of row 2 is kept; rows without one get the configured system prompt.
    expect(examples[0].example).toEqual({
      kind: 'chat',
      messages: [
        { role: 'system', content: 'SYS' },
        { role: 'user', content: 'a lighthouse in a storm' },
        { role: 'assistant', content: 'Slow push in on the lighthouse as waves burst on the rocks.' },
      ],
    });
    expect(examples[1].example.kind === 'chat' && examples[1].example.messages[0]).toEqual({ role: 'system', content: 'Be brief.' });
  });
});

describe('formats', () => {
  it('detects each format from its columns', () => {
    const d = (cols: string[]) => detectFormat(new Set(cols), 'text');
    expect(d(['messages'])).toBe('messages');
    expect(d(['conversations'])).toBe('messages');
    expect(d(['prompt', 'completion'])).toBe('prompt_completion');
    expect(d(['instruction', 'response', 'text', 'tier', 'word_count', 'source'])).toBe('instruction_response');
    expect(d(['prompt', 'response'])).toBe('instruction_response');
    expect(d(['instruction', 'input', 'output'])).toBe('instruction_output');
    expect(d(['style_name', 'prompt_text', 'negative_prompt', 'tags'])).toBe('video_style');
    expect(d(['text', 'source'])).toBe('text');
    expect(detectFormat(new Set(['body']), 'body')).toBe('text');
    expect(d(['foo'])).toBeUndefined();
    expect(() => resolveFormat([{ values: { chosen: 'a', rejected: 'b' }, file: 'f', row: 1 }], chatOpts, 'x')).toThrow(/preference \(DPO\)/);
    expect(() => resolveFormat([{ values: { foo: 'a' }, file: 'f', row: 1 }], chatOpts, 'x')).toThrow(/no known format in columns \[foo\]/);
  });

  it("renders instruction rows through the chat template or as the seed's ### blocks", () => {
    const rows = [{ values: { instruction: 'a fox at dawn', response: 'Low tracking shot.', style_name: 'Noir', negative_prompt: 'blurry', tags: ['a', 'b'] }, file: 'f', row: 1 }];
    const chat = convertRows(rows, 'train', 'instruction_response', chatOpts).examples[0].example;
    expect(chat).toEqual({
      kind: 'chat',
      messages: [
        { role: 'system', content: 'SYS' },
        { role: 'user', content: 'Generate a cinematic video prompt for: a fox at dawn\nStyle: Noir' },
        { role: 'assistant', content: 'Low tracking shot.' },
      ],
    });
    const alpaca = convertRows(rows, 'train', 'instruction_response', { ...chatOpts, instructionFormat: 'alpaca' }).examples[0].example;
    expect(alpaca).toEqual({
      kind: 'completion',
      prompt: '### Instruction:\na fox at dawn\n\n### Style:\nNoir\n\n### Response:\n',
      completion: 'Low tracking shot.\n\n### Negative Prompt:\nblurry\n\n### Tags:\na, b',
    });
    // The prefix is not doubled when the instruction already carries it.
    const pre = [{ values: { instruction: 'Generate a cinematic video prompt for: rain', response: 'Pan.' }, file: 'f', row: 1 }];
    const again = convertRows(pre, 'train', 'instruction_response', { ...chatOpts, systemPrompt: null }).examples[0].example;
    expect(again.kind === 'chat' && again.messages).toEqual([
      { role: 'user', content: 'Generate a cinematic video prompt for: rain' },
      { role: 'assistant', content: 'Pan.' },
    ]);
  });

  it('converts video-style, instruction/output, prompt/completion, ShareGPT and text rows', async () => {
    const vs = (await readDataset(join(FIXTURES, 'video-style.parquet'), names)).splits.train!;
    const alpaca = convertRows(vs, 'train', 'video_style', { ...chatOpts, instructionFormat: 'alpaca' }).examples[0].example;
    expect(alpaca).toEqual({
      kind: 'completion',
      prompt: '### Instruction:\nGenerate a high-quality video prompt based on the following style.\n\n### Style:\nFilm Noir\n\n### Response:\n',
      completion: 'Slow dolly through a rain-slick alley under a single buzzing streetlamp.\n\n### Negative Prompt:\nblurry, low quality\n\n### Tags:\nnoir, rain',
    });
    const io = convertRows([{ values: { instruction: 'Describe', input: 'a bridge', output: 'Crane up.' }, file: 'f', row: 1 }], 'train', 'instruction_output', { ...chatOpts, systemPrompt: null, userPrefix: '' });
    expect(io.examples[0].example).toEqual({ kind: 'chat', messages: [{ role: 'user', content: 'Describe\n\na bridge' }, { role: 'assistant', content: 'Crane up.' }] });
    const pc = [{ values: { prompt: 'P: ', completion: 'C' }, file: 'f', row: 1 }];
    expect(convertRows(pc, 'train', 'prompt_completion', { ...chatOpts, instructionFormat: 'alpaca' }).examples[0].example).toEqual({ kind: 'completion', prompt: 'P: ', completion: 'C' });
    const sg = [{ values: { conversations: [{ from: 'human', value: 'hi' }, { from: 'gpt', value: 'Pan left.' }] }, file: 'f', row: 1 }];
    expect(convertRows(sg, 'train', 'messages', { ...chatOpts, systemPrompt: null }).examples[0].example).toEqual({
      kind: 'chat',
      messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'Pan left.' }],
    });
    expect(convertRows([{ values: { text: 'verbatim' }, file: 'f', row: 1 }], 'train', 'text', chatOpts).examples[0].example).toEqual({ kind: 'text', text: 'verbatim' });
  });

  it('skips and reports rows with missing, non-string or empty fields', () => {
    const rows = [
      { values: { instruction: 'a', response: 'ok' }, file: 'f.jsonl', row: 1 },
      { values: { instruction: 'a' }, file: 'f.jsonl', row: 2 },
      { values: { instruction: 'a', response: 42 }, file: 'f.jsonl', row: 3 },
      { values: { instruction: 'a', response: '   ' }, file: 'f.jsonl', row: 4 },
      { values: { instruction: ['x'], response: 'r' }, file: 'f.jsonl', row: 5 },
    ];
    const { examples, bad } = convertRows(rows, 'train', 'instruction_response', chatOpts);
    expect(examples.length).toBe(1);
    expect(bad.map((b) => [b.row, b.reason])).toEqual([
      [2, 'missing "response"'],
      [3, '"response" is number, not a string'],
      [4, 'empty "response"'],
      [5, '"instruction" is a list, not a string'],
    ]);
    const msgs = [{ values: { messages: [{ role: 'user', content: 'q' }, { role: 'assistant', content: '' }] }, file: 'f', row: 9 }];
    expect(convertRows(msgs, 'train', 'messages', chatOpts).bad[0].reason).toBe('empty assistant message');
  });
});

describe('loading and the eval split', () => {
  const lines = (n: number, from = 0) =>
    Array.from({ length: n }, (_, i) => JSON.stringify({ instruction: `scene ${i + from}`, response: `Slow pan over scene ${i + from}.` })).join('\n');

  it('refuses to start when more than max_bad_row_fraction of the rows is bad', async () => {
    const dir = tempDir({ 'train.jsonl': `${lines(8)}\n{"instruction": "x"}\n{"instruction": "y", "response": ""}\n` });
    const cfg = (f: number) => resolveConfig({ dataset_id: dir, max_bad_row_fraction: f }, 'test').config;
    const loaded = await loadExamples(cfg(0.1), offlineHub);
    expect(loaded.bad.map((b) => b.row)).toEqual([9, 10]);
    expect(() => checkBadRows(loaded, 0.1)).toThrow(/2 of 10 rows \(20\.0%\) are unusable[\s\S]*train\.jsonl row 9 \(train\): missing "response"/);
    expect(() => checkBadRows(loaded, 0.2)).not.toThrow();
  });

  it("uses the dataset's validation split, else test_size of train with the seed, deterministically", () => {
    const train = Array.from({ length: 25 }, (_, i) => i);
    const own = chooseEvalSplit(train, [100, 101], { testSize: 0.1, seed: 42, evalStrategy: 'epoch' });
    expect(own).toMatchObject({ source: 'validation split', eval: [100, 101], train });
    expect(own.description).toBe("eval: the dataset's validation split (2 rows)");
    const a = chooseEvalSplit(train, undefined, { testSize: 0.1, seed: 42, evalStrategy: 'epoch' });
    expect(a.eval.length).toBe(3); // ceil(2.5)
    expect(a.train.length).toBe(22);
    expect([...a.train, ...a.eval].sort((x, y) => x - y)).toEqual(train);
    expect(chooseEvalSplit(train, undefined, { testSize: 0.1, seed: 42, evalStrategy: 'epoch' })).toEqual(a);
    expect(chooseEvalSplit(train, undefined, { testSize: 0.1, seed: 7, evalStrategy: 'epoch' }).eval).not.toEqual(a.eval);
    expect(a.description).toBe('eval: 10% of the train split held out (test_size 0.1, seed 42): 3 rows');
    expect(chooseEvalSplit(train, undefined, { testSize: 5, seed: 42, evalStrategy: 'steps' }).eval.length).toBe(5);
    expect(chooseEvalSplit(train, undefined, { testSize: 0.1, seed: 42, evalStrategy: 'no' }).eval).toEqual([]);
    expect(() => chooseEvalSplit(train, undefined, { testSize: 0, seed: 42, evalStrategy: 'steps' })).toThrow(ConfigError);
    expect(() => chooseEvalSplit(train, undefined, { testSize: 0, seed: 42, evalStrategy: 'steps' })).toThrow(/eval_strategy "steps".*no validation split and test_size is 0/);
  });
});
