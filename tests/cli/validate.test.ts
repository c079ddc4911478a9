import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runValidate } from '../../src/cli/validate.js';
import { bundledDatasetDir } from '../../src/config/paths.js';
import type { DataReport } from '../../src/data/report.js';
import { ConfigError } from '../../src/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { embeddedDefaultConfigPath } from '../../src/cli/train-defaults.js';

const env = { HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent-hf-home' };
const clean = readFileSync(join(bundledDatasetDir(), 'train.jsonl'), 'utf8').trim().split('\n').slice(0, 24);

function dataset(files: Record<string, string[]>): string {
  const dir = mkdtempSync(join(tmpdir(), 'val-'));
  for (const [name, lines] of Object.entries(files)) writeFileSync(join(dir, name), lines.join('\n') + '\n');
  return dir;
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runValidate(argv, { env, out: (s) => (out += s + '\n'), err: (s) => (err += s + '\n') });
  return { code, out, err };
}

const row = (instruction: string, response: string) => JSON.stringify({ instruction, response });
const first = JSON.parse(clean[0]) as { instruction: string; response: string };

describe('prompt-lora validate', () => {
  it('reports format, splits, token lengths, duplicates, overlap and the quality gate as JSON', async () => {
    const train = [
      ...clean,
      clean[3], // exact duplicate of row 4
      row('another scene', first.response.replace('Scene', 'scene').replace(/\.$/, '!')), // near duplicate of row 1
      row('a city at night', 'Slow pan over the city. --ar 16:9'), // too short + SD parameters
      row('a fox', 'Sure! Here is your prompt: Low tracking shot of a fox running through tall grass at dusk, golden light, dust in the air, a sense of freedom and wild joy as the grass parts around it and the sun sinks.'),
      '{"instruction": "no response"}',
    ];
    const validation = [clean[5], row('unseen', 'Crane up over a frozen harbor at dawn, pale light on the ice, gulls wheeling, a heavy 35mm grain and a hush of patient waiting settling over the moored boats and the silent water below them all.')];
    const dir = dataset({ 'train.jsonl': train, 'validation.jsonl': validation });
    const { code, out } = await run(['--dataset', dir, '--json']);
    expect(code).toBe(0);
    const r = JSON.parse(out) as DataReport;
    expect(r.format).toBe('instruction_response');
    expect(r.rows).toEqual({ train: { read: 29, usable: 28 }, validation: { read: 2, usable: 2 } });
    expect(r.badRows.rows).toEqual([{ split: 'train', file: 'train.jsonl', row: 29, reason: 'missing "response"' }]);
    expect(r.evalSplit).toBe("eval: the dataset's validation split (2 rows)");
    const t = r.tokens.train!;
    expect(t.examples).toBe(28);
    expect(t.p50).toBeGreaterThan(100);
    expect(t.max).toBeGreaterThanOrEqual(t.p99);
    expect(t.histogram.reduce((s, h) => s + h.count, 0)).toBe(28);
    expect(r.duplicates.exact).toEqual([{ a: { split: 'train', file: 'train.jsonl', row: 4 }, b: { split: 'train', file: 'train.jsonl', row: 25 } }]);
    expect(r.duplicates.near.map((d) => [d.a.row, d.b.row])).toEqual(expect.arrayContaining([[1, 26], [4, 25]]));
    expect(r.overlap.exact.map((o) => [o.train.row, o.validation.row])).toEqual([[6, 1]]);
    expect(r.quality.word_count.map((q) => q.row)).toEqual([27]);
    expect(r.quality.sd_parameters.map((q) => q.row)).toEqual([27]);
    expect(r.quality.leakage.map((q) => q.row)).toEqual([28]);
    expect(r.warnings).toEqual(expect.arrayContaining(['1 unusable rows skipped (listed under bad rows)', '1 exact duplicate train examples']));
    // Without --config: the embedded default's model, whose tokenizer is the bundled one (no fallback note).
    expect(r.notes.filter((n) => /could not be read/.test(n))).toEqual([]);
  });

  it('prints a readable report', async () => {
    const dir = dataset({ 'train.jsonl': clean });
    const { code, out } = await run(['--dataset', dir]);
    expect(code).toBe(0);
    expect(out).toMatch(/format {4}instruction_response/);
    expect(out).toMatch(/eval: 10% of the train split held out \(test_size 0\.1, seed 42\): 3 rows/);
    // The max_seq_length `node train.js` uses without --config.
    const trainDefault = loadConfig(embeddedDefaultConfigPath()).config;
    expect(out).toMatch(new RegExp(String.raw`tokens {4}train: 24 examples, mean [\d.]+, p50 \d+, p90 \d+, p95 \d+, p99 \d+, max \d+ \(max_seq_length ${trainDefault.max_seq_length}\)`));
    expect(out).toMatch(/result {4}the data can train/);
  });

  it('exits 1 when the data cannot train', async () => {
    const bad = dataset({ 'train.jsonl': [...clean.slice(0, 4), '{"instruction": "x"}', '{"instruction": "y", "response": 3}'] });
    const r1 = await run(['--dataset', bad]);
    expect(r1.code).toBe(1);
    expect(r1.out).toMatch(/error {5}2 of 6 rows unusable \(33\.3%\), above max_bad_row_fraction 0\.05/);
    expect(r1.err).toMatch(/the data cannot train/);
    expect((await run(['--dataset', bad, '--set', 'max_bad_row_fraction=0.5'])).code).toBe(0);

    const unknown = dataset({ 'train.jsonl': ['{"question": "a", "answer": "b"}'] });
    const r2 = await run(['--dataset', unknown, '--json']);
    expect(r2.code).toBe(1);
    expect((JSON.parse(r2.out) as DataReport).errors[0]).toMatch(/no known format in columns \[question, answer\]/);

    const noEval = dataset({ 'train.jsonl': clean });
    const r3 = await run(['--dataset', noEval, '--set', 'test_size=0', '--set', 'eval_strategy=steps']);
    expect(r3.code).toBe(1);
    expect(r3.out).toMatch(/eval_strategy "steps": the dataset has no validation split and test_size is 0/);

    const tooShort = dataset({ 'train.jsonl': clean });
    const r4 = await run(['--dataset', tooShort, '--set', 'max_seq_length=40']);
    expect(r4.code).toBe(1);
    expect(r4.out).toMatch(/no train example keeps a trained token within max_seq_length 40/);
  });

  it('reads --config, takes --dataset over it, and refuses unknown options', async () => {
    const dir = dataset({ 'train.jsonl': clean });
    const cfgDir = mkdtempSync(join(tmpdir(), 'valcfg-'));
    writeFileSync(join(cfgDir, 'c.yaml'), 'max_seq_length: 128\ndataset_id: ./nowhere\nreport_to: wandb\n');
    const { code, out } = await run(['--config', join(cfgDir, 'c.yaml'), '--dataset', dir]);
    expect(code).toBe(0);
    expect(out).toMatch(/max_seq_length 128/);
    expect(out).toMatch(/warning {3}config report_to wandb: nothing is uploaded from here; .*wandb sync --sync-tensorboard DIR/);
    await expect(run(['--dataset', dir, '--jsn'])).rejects.toThrow(ConfigError);
    await expect(run(['--dataset', dir, '--jsn'])).rejects.toThrow(/unknown option --jsn; did you mean --json\?/);
    expect((await run(['--help'])).out).toMatch(/usage: prompt-lora validate --dataset PATH\|HUB_ID/);
  });
});
