import { ExportError } from '../errors.js';
import { SEED_PARAMETERS, type ModelfileParameters } from '../config/sampling-parameters.js';
import type { ChatMessage, ChatTemplateOptions } from '../model/tokenizer.js';

/**
 * Ollama Modelfiles generated from a run's settings, with a TEMPLATE that reproduces the training
 * rendering character for character:
 *
 *   <|im_start|>system\n{SYSTEM}<|im_end|>\n                      when there is a system prompt
 *   <|im_start|>user\n{user_prefix}{content}<|im_end|>\n          each user turn
 *   <|im_start|>assistant\n{content}<|im_end|>\n                  each earlier assistant turn
 *   <|im_start|>assistant\n{think}                                 the generation prompt
 *
 * {think} and the block before a final (prefilled) assistant turn are read off the model's own
 * chat template (probeChatTemplate): Qwen3's hybrid template with enable_thinking=false writes the
 * empty block `<think>\n\n</think>\n\n`, the 2507 Instruct template writes nothing. The template is
 * checked to be ChatML first; any other is refused. The user prefix is what training put before
 * bare instructions (config user_prefix), so Ollama users type a bare scene; a message that already
 * starts with the prefix gets it twice (training skipped it), and a system message other than the
 * first is not supported by the TEMPLATE.
 *
 * Parameters default to SEED_PARAMETERS (src/config/sampling-parameters.ts). Stops: <|im_end|>,
 * <|im_start|> and, unless the model is meant to think, <think>.
 */

/** What the model's chat template writes around an assistant turn (see probeChatTemplate). */
export interface ChatTemplateShape {
  /** After `<|im_start|>assistant\n` of the generation prompt. */
  readonly generationSuffix: string;
  /** Between `<|im_start|>assistant\n` and the content of a final assistant message. */
  readonly lastAssistantPrefix: string;
}

export type RenderChat = (messages: readonly ChatMessage[], opts?: ChatTemplateOptions) => string;

const S = '<|im_start|>';
const E = '<|im_end|>';

/**
 * Renders probe conversations with the model's template (as training does, enable_thinking as
 * configured) and reads off the think-block handling; refuses a template that is not ChatML or
 * treats history differently from the TEMPLATE above.
 */
export function probeChatTemplate(render: RenderChat, enableThinking: boolean): ChatTemplateShape {
  const opts = (addGenerationPrompt: boolean): ChatTemplateOptions => ({ addGenerationPrompt, enableThinking });
  const sys: ChatMessage = { role: 'system', content: 'SYS' };
  const chatml = `${S}system\nSYS${E}\n${S}user\nUSER${E}\n`;
  const refuse = (what: string, got: string): never => {
    throw new ExportError(
      `the model's chat template is not the ChatML form an Ollama TEMPLATE can reproduce (${what}); got ${JSON.stringify(got.slice(0, 200))}. ` +
        'Export without --modelfile, or write the TEMPLATE by hand.',
    );
  };
  const plain = render([sys, { role: 'user', content: 'USER' }], opts(false));
  if (plain !== chatml) refuse('system + user turn', plain);
  const gen = render([sys, { role: 'user', content: 'USER' }], opts(true));
  if (!gen.startsWith(`${chatml}${S}assistant\n`)) refuse('generation prompt', gen);
  const generationSuffix = gen.slice(chatml.length + `${S}assistant\n`.length);
  const last = render([sys, { role: 'user', content: 'USER' }, { role: 'assistant', content: 'ANSWER' }], opts(false));
  const lastStart = `${chatml}${S}assistant\n`;
  if (!last.startsWith(lastStart) || !last.endsWith(`ANSWER${E}\n`)) refuse('final assistant turn', last);
  const lastAssistantPrefix = last.slice(lastStart.length, last.length - `ANSWER${E}\n`.length);
  const history = render(
    [{ role: 'user', content: 'U1' }, { role: 'assistant', content: 'A1' }, { role: 'user', content: 'U2' }],
    opts(true),
  );
  const expected = `${S}user\nU1${E}\n${S}assistant\nA1${E}\n${S}user\nU2${E}\n${S}assistant\n${generationSuffix}`;
  if (history !== expected) refuse('multi-turn history', history);
  return { generationSuffix, lastAssistantPrefix };
}

/** Text for a Go template: as is, or as a quoted action when it contains template delimiters. */
function goText(s: string): string {
  if (!s.includes('{{') && !s.includes('}}')) return s;
  return `{{ ${JSON.stringify(s)} }}`;
}

/** The Ollama TEMPLATE (Go text/template) reproducing the training rendering. */
export function ollamaTemplate(shape: ChatTemplateShape, userPrefix: string): string {
  return [
    `{{- if .System }}${S}system`,
    `{{ .System }}${E}`,
    `{{ end }}`,
    `{{- range $i, $_ := .Messages }}`,
    `{{- $last := eq (len (slice $.Messages $i)) 1 }}`,
    `{{- if eq .Role "user" }}${S}user`,
    `${goText(userPrefix)}{{ .Content }}${E}`,
    `{{ if $last }}${S}assistant`,
    `${goText(shape.generationSuffix)}{{ end }}`,
    `{{- else if eq .Role "assistant" }}${S}assistant`,
    `{{ if $last }}${goText(shape.lastAssistantPrefix)}{{ end }}{{ .Content }}{{ if not $last }}${E}`,
    `{{ end }}`,
    `{{- end }}`,
    `{{- end }}`,
  ].join('\n');
}

export interface ModelfileSpec {
  /** FROM: a path relative to the Modelfile (`./model-q4_k_m.gguf`) or a model name. */
  readonly from: string;
  /** ADAPTER: a LoRA GGUF (relative path). */
  readonly adapter?: string;
  readonly template: string;
  /** SYSTEM; null writes none. */
  readonly system: string | null;
  readonly parameters: ModelfileParameters;
  readonly stops: readonly string[];
  /** Comment lines put at the top. */
  readonly comments?: readonly string[];
}

/** A `"""…"""` block; Ollama processes no escapes, so the text may not contain `"""`. */
function tripleQuoted(what: string, text: string): string {
  if (text.includes('"""')) throw new ExportError(`Modelfile ${what} contains """, which a Modelfile cannot quote; change the text`);
  return `"""${text}"""`;
}

/** The Modelfile text. */
export function renderModelfile(spec: ModelfileSpec): string {
  const lines: string[] = [...(spec.comments ?? []).map((c) => `# ${c}`.trimEnd())];
  if (lines.length > 0) lines.push('');
  lines.push(`FROM ${spec.from}`);
  if (spec.adapter) lines.push(`ADAPTER ${spec.adapter}`);
  lines.push('', `TEMPLATE ${tripleQuoted('TEMPLATE', spec.template)}`);
  if (spec.system !== null) lines.push('', `SYSTEM ${tripleQuoted('SYSTEM', spec.system)}`);
  lines.push('');
  for (const [k, v] of Object.entries(spec.parameters)) lines.push(`PARAMETER ${k} ${v}`);
  for (const s of spec.stops) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  return `${lines.join('\n')}\n`;
}

/** The run settings a Modelfile is made from (the training config's keys of the same names). */
export interface ModelfileSettings {
  readonly systemPrompt: string | null;
  readonly userPrefix: string;
  readonly enableThinking: boolean;
  readonly parameters?: Partial<ModelfileParameters>;
}

/** Stops: end of turn, start of a new turn, and `<think>` unless thinking is on. */
export function modelfileStops(enableThinking: boolean): string[] {
  return enableThinking ? [E, S] : [E, S, '<think>'];
}

export const ADAPTER_NOTE = [
  'ADAPTER variant: the base model GGUF plus the LoRA adapter GGUF, applied by Ollama at load time.',
  'Ollama 0.12 to 0.29 cannot apply adapters to qwen3 ("loras are not yet implemented"); it works again',
  'from Ollama 0.30. With those versions use the Modelfile of the merged GGUF instead.',
];

/** Both Modelfiles: the merged GGUF one and (when `adapter`) the ADAPTER variant. */
export function buildModelfile(
  render: RenderChat,
  settings: ModelfileSettings,
  files: { from: string; adapter?: string },
  comments: readonly string[] = [],
): string {
  const shape = probeChatTemplate(render, settings.enableThinking);
  return renderModelfile({
    from: files.from,
    adapter: files.adapter,
    template: ollamaTemplate(shape, settings.userPrefix),
    system: settings.systemPrompt,
    parameters: { ...SEED_PARAMETERS, ...(settings.parameters ?? {}) },
    stops: modelfileStops(settings.enableThinking),
    comments: files.adapter ? [...comments, ...ADAPTER_NOTE] : comments,
  });
}

/**
 * What Ollama hands the TEMPLATE for a chat request: the Modelfile's SYSTEM as a first system
 * message when the request has none, then consecutive messages of one role joined with "\n\n"
 * (`.Messages`), and every system message joined into `.System` (Ollama's template.collate).
 */
export function ollamaTemplateData(messages: readonly ChatMessage[], system: string | null): Record<string, unknown> {
  const all = system !== null && !messages.some((m) => m.role === 'system') ? [{ role: 'system' as const, content: system }, ...messages] : [...messages];
  const systems: string[] = [];
  const collated: { Role: string; Content: string }[] = [];
  for (const m of all) {
    if (m.role === 'system') systems.push(m.content);
    const prev = collated[collated.length - 1];
    if (prev && prev.Role === m.role) prev.Content += `\n\n${m.content}`;
    else collated.push({ Role: m.role, Content: m.content });
  }
  return { System: systems.join('\n\n'), Messages: collated, Prompt: '', Response: '' };
}
