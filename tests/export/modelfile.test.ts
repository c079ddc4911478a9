import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX } from '../../src/config/schema.js';
import { generationPrompt } from '../../src/data/render.js';
import { ExportError } from '../../src/errors.js';
import { renderGoTemplate } from '../../src/export/go-template.js';
import { buildModelfile, ollamaTemplateData, probeChatTemplate } from '../../src/export/modelfile.js';
import { bundledQwen3TokenizerDir, QwenTokenizer, type ChatMessage } from '../../src/model/tokenizer.js';

/**
 * The Modelfile's TEMPLATE, evaluated as Ollama would (its SYSTEM as the first message, then
 * Go-template rendering), must equal character for character the Jinja rendering training uses:
 * the conversation with the system prompt added, user turns prefixed, and the template's
 * generation prompt (src/data/render.ts generationPrompt).
 */

/** The TEMPLATE and SYSTEM of a Modelfile's text. */
function parseModelfile(text: string): { template: string; system: string | null; lines: string[] } {
  const template = /TEMPLATE """([\s\S]*?)"""/.exec(text)?.[1];
  const system = /SYSTEM """([\s\S]*?)"""/.exec(text)?.[1] ?? null;
  if (template === undefined) throw new Error('no TEMPLATE');
  return { template, system, lines: text.split('\n') };
}

/** What training renders for a conversation a user would send to Ollama (bare user texts). */
function trainingRendering(tok: QwenTokenizer, messages: ChatMessage[], system: string | null, prefix: string, enableThinking: boolean): string {
  const prefixed = messages.map((m) => (m.role === 'user' ? { ...m, content: prefix + m.content } : m));
  const withSystem = system !== null && prefixed[0]?.role !== 'system' ? [{ role: 'system' as const, content: system }, ...prefixed] : prefixed;
  return generationPrompt(tok, withSystem, enableThinking);
}

const CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'Scene 1: Sarah sits frustrated at her desk, 360-degree orbit around subject. minimalist noir' }],
  [{ role: 'user', content: 'a lighthouse in a storm' }, { role: 'assistant', content: 'Slow dolly in on the lighthouse, rain in sheets.' }, { role: 'user', content: 'now at dawn' }],
  [{ role: 'system', content: 'You write short prompts.' }, { role: 'user', content: 'a fox\nin snow, "quoted" {{ braces }} — ünïcode 🦊' }],
  [{ role: 'user', content: '' }],
];

describe('Modelfile TEMPLATE reproduces the training rendering', () => {
  let hybrid: QwenTokenizer;
  let plainDir: string;
  let plain: QwenTokenizer;

  beforeAll(async () => {
    hybrid = await QwenTokenizer.load();
    // A 2507-Instruct-like template without the thinking switch: the formats doc's ChatML form.
    plainDir = mkdtempSync(join(tmpdir(), 'chatml-'));
    const src = bundledQwen3TokenizerDir();
    copyFileSync(join(src, 'tokenizer.json'), join(plainDir, 'tokenizer.json'));
    const cfg = JSON.parse(readFileSync(join(src, 'tokenizer_config.json'), 'utf8'));
    cfg.chat_template =
      "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
    writeFileSync(join(plainDir, 'tokenizer_config.json'), JSON.stringify(cfg));
    plain = await QwenTokenizer.load(plainDir);
  });
  afterAll(() => rmSync(plainDir, { recursive: true, force: true }));

  const cases: [string, () => QwenTokenizer, boolean, string | null, string][] = [
    ['hybrid Qwen3 template, thinking off (empty think block)', () => hybrid, false, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX],
    ['hybrid Qwen3 template, thinking on', () => hybrid, true, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX],
    ['no system prompt, no user prefix', () => hybrid, false, null, ''],
    ['ChatML template without a thinking switch', () => plain, false, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PREFIX],
    ['prefix with template delimiters', () => plain, false, 'sys {{ not a template }}', 'Say {{x}}: '],
  ];
  for (const [name, tokOf, thinking, system, prefix] of cases) {
    it(name, () => {
      const tok = tokOf();
      const text = buildModelfile((m, o) => tok.renderChat(m, o), { systemPrompt: system, userPrefix: prefix, enableThinking: thinking }, { from: './model.gguf' });
      const mf = parseModelfile(text);
      expect(mf.system).toBe(system);
      for (const conv of CONVERSATIONS) {
        const got = renderGoTemplate(mf.template, ollamaTemplateData(conv, mf.system));
        const want = trainingRendering(tok, conv, system, prefix, thinking);
        expect(got, `conversation ${JSON.stringify(conv)}`).toBe(want);
      }
    });
  }

  it('writes FROM, parameters and stops; the ADAPTER variant carries the Ollama note', () => {
    const render = (m: readonly ChatMessage[], o?: object) => hybrid.renderChat(m, o);
    const text = buildModelfile(render, { systemPrompt: DEFAULT_SYSTEM_PROMPT, userPrefix: DEFAULT_USER_PREFIX, enableThinking: false }, { from: './model-q4_k_m.gguf' });
    const lines = text.split('\n');
    expect(lines).toContain('FROM ./model-q4_k_m.gguf');
    for (const p of ['temperature 0.8', 'top_p 0.9', 'top_k 20', 'num_ctx 512', 'num_predict 120', 'repeat_penalty 1.25']) expect(lines).toContain(`PARAMETER ${p}`);
    for (const s of ['<|im_end|>', '<|im_start|>', '<think>']) expect(lines).toContain(`PARAMETER stop "${s}"`);
    expect(text).not.toContain('ADAPTER');
    const adapter = buildModelfile(render, { systemPrompt: null, userPrefix: '', enableThinking: true, parameters: { num_ctx: 2048 } }, { from: './base-f16.gguf', adapter: './lora.gguf' });
    expect(adapter).toContain('FROM ./base-f16.gguf\nADAPTER ./lora.gguf\n');
    expect(adapter).toMatch(/# Ollama 0\.12 to 0\.29 cannot apply adapters to qwen3/);
    expect(adapter).toContain('PARAMETER num_ctx 2048');
    expect(adapter).not.toContain('SYSTEM');
    expect(adapter).not.toContain('PARAMETER stop "<think>"');
  });

  it('refuses a chat template that is not ChatML, and SYSTEM text with """', () => {
    const llama2 = (m: readonly ChatMessage[]) => m.map((x) => `[INST] ${x.content} [/INST]`).join('');
    expect(() => probeChatTemplate(llama2, false)).toThrow(ExportError);
    const render = (m: readonly ChatMessage[], o?: object) => hybrid.renderChat(m, o);
    expect(() => buildModelfile(render, { systemPrompt: 'say """hi"""', userPrefix: '', enableThinking: false }, { from: './m.gguf' })).toThrow(/"""/);
  });
});

describe('Go template subset', () => {
  it('evaluates conditions, ranges, variables and trimming as Go does', () => {
    const data = { Items: ['a', 'b', 'c'], Empty: [], Name: 'x', N: 0 };
    expect(renderGoTemplate('{{- range $i, $v := .Items }}{{ if $i }},{{ end }}{{ $v }}{{ end }}', data)).toBe('a,b,c');
    expect(renderGoTemplate('{{ if .Empty }}yes{{ else if .Name }}name={{ .Name }}{{ else }}no{{ end }}', data)).toBe('name=x');
    expect(renderGoTemplate('a  \n  {{- "b" -}}  \n c', data)).toBe('abc');
    expect(renderGoTemplate('{{ range .Items }}{{ $last := eq . "c" }}{{ if not $last }}{{ . }}{{ end }}{{ end }}', data)).toBe('ab');
    expect(renderGoTemplate('{{ len (slice .Items 1) }} {{ and .N .Name }} {{ or .N .Name }} {{ index .Items 2 }}', data)).toBe('2 0 x c');
    expect(renderGoTemplate('{{/* comment */}}{{ range .Empty }}x{{ else }}none{{ end }}', data)).toBe('none');
    expect(() => renderGoTemplate('{{ if .Name }}unclosed', data)).toThrow(ExportError);
    expect(() => renderGoTemplate('{{ printf "%s" .Name }}', data)).toThrow(ExportError);
  });
});
