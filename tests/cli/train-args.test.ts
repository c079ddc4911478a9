import { describe, expect, it } from 'vitest';
import { TRAIN_FLAGS, TRAIN_USAGE } from '../../src/cli/train.js';
import { parseConfigArgs } from '../../src/config/args.js';

describe('train flags', () => {
  it('--resume takes an optional folder', () => {
    const parse = (argv: string[]) => parseConfigArgs(argv, 'train', TRAIN_FLAGS);
    expect(parse(['--resume']).flags.get('resume')).toEqual([]);
    expect(parse(['--resume', 'out/checkpoint-10']).flags.get('resume')).toEqual(['out/checkpoint-10']);
    expect(parse(['--resume=out']).flags.get('resume')).toEqual(['out']);
    const both = parse(['--resume', '--config', 'c.yaml']);
    expect(both.flags.get('resume')).toEqual([]);
    expect(both.configPath).toBe('c.yaml');
    expect(parse([]).flags.has('resume')).toBe(false);
    // Flags whose value is required still say so.
    expect(() => parse(['--config', '--resume'])).toThrow(/--config needs a value/);
    expect(TRAIN_USAGE).toMatch(/--resume \[VALUE\]/);
  });
});

describe('train --help', () => {
  it('every flag is separated from its help text (the longest ones too)', () => {
    const lines = TRAIN_USAGE.split('\n').filter((l) => l.startsWith('  --'));
    expect(lines.length).toBeGreaterThan(5);
    for (const l of lines) expect(l, l).toMatch(/^ {2}--[a-z-]+( \[?VALUE\]?)? {2,}\S/);
    expect(TRAIN_USAGE).toMatch(/--random-weights VALUE {2,}train on/);
  });
});
