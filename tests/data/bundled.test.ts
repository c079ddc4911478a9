import { beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundledDatasetDir } from '../../src/config/paths.js';
import { defaultConfig } from '../../src/config/load.js';
import { hubOptionsFromEnv } from '../../src/data/hub.js';
import { buildDataReport, type DataReport } from '../../src/data/report.js';
import { QUALITY_CHECKS, words } from '../../src/data/quality.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';

interface Row {
  instruction: string;
  response: string;
  word_count: number;
}

const dir = bundledDatasetDir();
const read = (split: string): Row[] =>
  readFileSync(join(dir, `${split}.jsonl`), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Row);

/** The first words of a prompt that opens with a camera move. */
const CAMERA_OPENING =
  /^(slow|low|handheld|crane|aerial|whip|overhead|tilt|pull|rack|dolly|lateral|jib|steadicam|gimbal|creeping|low-angle|snap|sweeping|boom|dutch-angle|slow-motion|macro|reverse|orbiting|push|floating|over-the-shoulder|tracking)\b/i;

describe('the bundled dataset', () => {
  const train = read('train');
  const validation = read('validation');

  it('has at least 400 train and 60 validation rows of 40–90-word prompts opening with a camera move', () => {
    expect(train.length).toBeGreaterThanOrEqual(400);
    expect(validation.length).toBeGreaterThanOrEqual(60);
    for (const r of [...train, ...validation]) {
      const n = r.response.split(/\s+/).filter(Boolean).length;
      expect(n, r.response).toBeGreaterThanOrEqual(40);
      expect(n, r.response).toBeLessThanOrEqual(90);
      expect(r.word_count).toBe(n);
      expect(r.response, r.response).toMatch(CAMERA_OPENING);
      expect(r.instruction.length).toBeGreaterThan(10);
    }
  });

  it('is varied: many openings, subjects and phrases, none dominating', () => {
    const all = [...train, ...validation];
    const openings = new Map<string, number>();
    for (const r of all) {
      const key = words(r.response).slice(0, 2).join(' ');
      openings.set(key, (openings.get(key) ?? 0) + 1);
    }
    expect(openings.size).toBeGreaterThanOrEqual(25);
    expect(Math.max(...openings.values()) / all.length).toBeLessThan(0.06);
    expect(new Set(all.map((r) => r.response)).size).toBe(all.length);
    expect(new Set(all.map((r) => r.instruction)).size).toBe(all.length);
  });

  it('is exactly what its deterministic builder writes', async () => {
    const build = (await import(join(dir, 'build.mjs'))) as { buildRows(): Record<'train' | 'validation', Row[]>; jsonl(rows: Row[]): string };
    const rows = build.buildRows();
    expect(build.jsonl(rows.train)).toBe(readFileSync(join(dir, 'train.jsonl'), 'utf8'));
    expect(build.jsonl(rows.validation)).toBe(readFileSync(join(dir, 'validation.jsonl'), 'utf8'));
  });

  describe('passes the project’s own validate', () => {
    let report: DataReport;
    beforeAll(async () => {
      const tok = await QwenTokenizer.load();
      report = await buildDataReport(defaultConfig(), tok, hubOptionsFromEnv({ HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent' }));
    }, 120_000);

    it('with no errors, no quality warnings, no duplicates and no train/validation overlap', () => {
      expect(report.errors).toEqual([]);
      expect(report.format).toBe('instruction_response');
      expect(report.rows).toEqual({ train: { read: train.length, usable: train.length }, validation: { read: validation.length, usable: validation.length } });
      expect(report.badRows.count).toBe(0);
      for (const c of QUALITY_CHECKS) expect(report.quality[c], c).toEqual([]);
      expect(report.duplicates).toEqual({ exact: [], near: [] });
      expect(report.overlap).toEqual({ exact: [], near: [] });
      expect(report.tokens.train!.truncated).toBe(0);
      expect(report.tokens.train!.max).toBeLessThanOrEqual(384); // fits the v7 config's max_seq_length too
      expect(report.topPhrases[0].share).toBeLessThan(0.1);
      expect(report.warnings).toEqual([]);
    });
  });
});
