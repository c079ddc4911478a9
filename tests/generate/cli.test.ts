import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { savePeftAdapter } from '../../src/model/peft.js';
import { Generator } from '../../src/generate/generator.js';
import { PROJECTIONS, projectionShape, type Projection } from '../../src/model/checkpoint.js';
import { parseQwen3Config, readQwen3Config } from '../../src/model/config.js';
import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

/** Runs `prompt-lora …` in this process; returns its exit status and what it wrote to stdout and stderr. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((out += String(chunk)), true));
  const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void (out += `${a.join(' ')}\n`));
  const error = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void (err += `${a.join(' ')}\n`));
  try {
    return { code: await runCli(args), out, err };
  } finally {
    write.mockRestore();
    log.mockRestore();
    error.mockRestore();
  }
}

describe('generate command', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'generate-cli-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('streams the text of a chat turn to stdout (as the API generates it), statistics to stderr, exit 0', async () => {
    const args = ['--temperature', '0', '--repeat-penalty', '1.3', '--max-new-tokens', '10'];
    const r = await cli(['generate', '--model', TINY_MODEL, '--adapter', TINY_ADAPTER, '--chat', 'a fox in the snow', ...args]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toMatch(/generate: 10 tokens \(length\) in [\d.]+ s: prompt \d+ tokens/);
    // The same request through the API: the user prefix and the default system prompt, NF4 base.
    const gpu = await testGpu();
    const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: 'nf4' });
    const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
    const gen = await Generator.create(gpu, model, { adapter, maxContext: 96, tokenizer: await QwenTokenizer.load(TINY_MODEL) });
    try {
      const api = await gen.generate({ messages: [{ role: 'user', content: `${DEFAULT_USER_PREFIX}a fox in the snow` }] }, { temperature: 0, repeatPenalty: 1.3, maxNewTokens: 10 });
      expect(api.text.length).toBeGreaterThan(0);
      expect(r.out).toBe(`${api.text}\n`);
    } finally {
      gen.destroy();
    }
  });

  it('takes --prompt and --messages files, with stop strings', async () => {
    const messages = join(dir, 'messages.json');
    writeFileSync(messages, JSON.stringify({ messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'a lighthouse' }] }));
    const m = await cli(['generate', '--model', TINY_MODEL, '--base', 'full', '--messages', messages, '--temperature', '0.7', '--seed', '5', '--max-new-tokens', '4']);
    expect(m.code, m.err).toBe(0);
    expect(m.err).toMatch(/seed 5/);
    const p = await cli(['generate', '--model', TINY_MODEL, '--prompt', 'Hello', '--temperature', '0', '--max-new-tokens', '6']);
    expect(p.code, p.err).toBe(0);
    const text = p.out.slice(0, -1);
    const stop = text.slice(2, 5);
    const s = await cli(['generate', '--model', TINY_MODEL, '--prompt', 'Hello', '--temperature', '0', '--max-new-tokens', '6', '--stop', stop]);
    expect(s.code, s.err).toBe(0);
    expect(s.out).toBe(`${text.slice(0, text.indexOf(stop))}\n`);
    expect(s.err).toMatch(/\(stop\)/);
  });

  it('refuses bad input with a clear message and a non-zero exit', async () => {
    const badAdapter = join(dir, 'other-shape-adapter');
    // An adapter for a model with a wider MLP (intermediate_size 128 instead of 96).
    const fixture = await readQwen3Config(TINY_MODEL);
    const other = parseQwen3Config({ ...(fixture.raw as Record<string, unknown>), intermediate_size: 128 }, 'a wider config');
    const rng = new Rng(3);
    const shapes = Object.fromEntries(PROJECTIONS.map((p) => [p, projectionShape(other, p)])) as Record<Projection, readonly [number, number]>;
    await savePeftAdapter(badAdapter, {
      config: { r: 2, alpha: 4, dropout: 0, targetModules: [...PROJECTIONS], useRslora: false },
      scale: 2,
      layers: Array.from({ length: other.numHiddenLayers }, () =>
        Object.fromEntries(PROJECTIONS.map((p) => [p, { a: rng.f32(2 * shapes[p][1]), b: rng.f32(shapes[p][0] * 2) }])),
      ),
      shapes,
    });
    const messages = join(dir, 'bad.json');
    writeFileSync(messages, JSON.stringify([{ role: 'narrator', content: 'x' }]));
    const cases: [string[], RegExp][] = [
      [['--chat', 'hi'], /needs --model/],
      [['--model', join(dir, 'missing'), '--chat', 'hi'], /missing\/config\.json: cannot read the model's config\.json/],
      [['--model', TINY_MODEL], /exactly one of --prompt, --chat, --messages \(got none\)/],
      [['--model', TINY_MODEL, '--chat', 'a', '--prompt', 'b'], /exactly one of .*got --prompt, --chat/],
      [['--model', TINY_MODEL, '--chat', 'a', '--temperature', 'hot'], /--temperature hot: expected a number ≥ 0/],
      [['--model', TINY_MODEL, '--chat', 'a', '--max-new-tokens', '0'], /--max-new-tokens 0: expected a whole number ≥ 1/],
      [['--model', TINY_MODEL, '--chat', 'a', '--top-p', '1.5'], /top_p = 1.5; expected a number in \(0, 1\]/],
      [['--model', TINY_MODEL, '--chat', 'a', '--base', 'int8'], /--base int8: choose nf4 or full/],
      [['--model', TINY_MODEL, '--chat', 'a', '--tempreature', '1'], /unknown option --tempreature; did you mean --temperature\?/],
      [['--model', TINY_MODEL, '--messages', messages], /message 0 must be \{"role"/],
      [['--model', TINY_MODEL, '--messages', join(dir, 'none.json')], /--messages .*none\.json: cannot read it as JSON/],
      [['--model', TINY_MODEL, '--adapter', badAdapter, '--chat', 'a'], /expected \[96, 2\].*made for a model of another shape/],
      [['--model', TINY_MODEL, '--prompt', 'a b c d e f', '--max-context', '3'], /more than the context of 3/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(['generate', ...args]);
      expect(r.code, `${args.join(' ')}: ${r.err}`).not.toBe(0);
      expect(r.err, args.join(' ')).toMatch(message);
      expect(r.out, args.join(' ')).toBe('');
    }
    const help = await cli(['generate', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/usage: prompt-lora generate --model DIR/);
    expect((await cli(['--help'])).out).toMatch(/generate +generate text/);
  });
});
