/**
 * Row formats → examples. A row becomes one of three example kinds:
 *   chat        a conversation rendered with the model's own chat template;
 *   completion  plain prompt text + completion text (the seed's `### Instruction:` blocks);
 *   text        text used verbatim (whole-text loss).
 * Formats (detected from the columns, overridable with dataset_format):
 *   messages             `messages` (role/content) or ShareGPT `conversations` (from/value)
 *   prompt_completion    `prompt` + `completion` (strings or message lists)
 *   instruction_response `instruction` (or `prompt`) + `response`, optional style_name,
 *                        negative_prompt, camera_movement, tags, scene_context
 *   instruction_output   `instruction` + `output`, optional `input` (Alpaca)
 *   video_style          Video-Diffusion-Prompt-Style rows: style_name, prompt_text, negative_prompt, tags
 *   text                 the `dataset_text_field` column
 * Strings are NFC-normalised (the tokenizer's own normaliser), so character offsets into the
 * rendered text are offsets into what the tokenizer sees.
 */
import type { ChatMessage } from '../model/tokenizer.js';
import type { DatasetFormatName } from '../config/schema.js';
import { DataError } from '../errors.js';
import type { RawRow, SplitName } from './read.js';

export type Example =
  | { kind: 'chat'; messages: ChatMessage[] }
  | { kind: 'completion'; prompt: string; completion: string }
  | { kind: 'text'; text: string };

export interface SourcedExample {
  example: Example;
  split: SplitName;
  file: string;
  row: number;
}

export interface BadRow {
  split: SplitName;
  file: string;
  row: number;
  reason: string;
}

export interface FormatOptions {
  format: DatasetFormatName | 'auto';
  /** Column of the `text` format. */
  textField: string;
  /** Instruction-style rows: through the chat template, or the seed's `### …:` blocks. */
  instructionFormat: 'chat' | 'alpaca';
  /** Added as the first message of conversations without a system message (null: none). */
  systemPrompt: string | null;
  /** Put before the user text of instruction-style rows in chat form, unless already there. */
  userPrefix: string;
}

/** The seed's fixed instruction for Video-Diffusion-Prompt-Style rows. */
export const VIDEO_STYLE_INSTRUCTION = 'Generate a high-quality video prompt based on the following style.';

/** Picks the format from the columns present; undefined when none fits. */
export function detectFormat(columns: ReadonlySet<string>, textField: string): DatasetFormatName | undefined {
  const has = (c: string) => columns.has(c);
  if (has('messages') || has('conversations')) return 'messages';
  if (has('prompt') && has('completion')) return 'prompt_completion';
  if ((has('instruction') || has('prompt')) && has('response')) return 'instruction_response';
  if (has('instruction') && has('output')) return 'instruction_output';
  if (has('prompt_text')) return 'video_style';
  if (has(textField)) return 'text';
  return undefined;
}

/** Columns seen in the first rows (those with a non-null value). */
export function columnsOf(rows: readonly RawRow[], sample = 200): Set<string> {
  const cols = new Set<string>();
  for (const r of rows.slice(0, sample)) {
    if (r.values === undefined) continue;
    for (const [k, v] of Object.entries(r.values)) if (v !== null && v !== undefined) cols.add(k);
  }
  return cols;
}

/**
 * Resolves `auto` against the train rows: each of the first rows votes for the format its own
 * columns fit, and the most common wins (a few malformed rows do not decide the format). A
 * DataError names the columns found when nothing fits.
 */
export function resolveFormat(rows: readonly RawRow[], opts: FormatOptions, where: string, sample = 200): DatasetFormatName {
  if (opts.format !== 'auto') return opts.format;
  const cols = columnsOf(rows, sample);
  if (cols.has('chosen') && cols.has('rejected')) {
    throw new DataError(`${where}: chosen/rejected columns are preference (DPO) data; this trainer does supervised fine-tuning only.`);
  }
  const votes = new Map<DatasetFormatName, number>();
  for (const r of rows.slice(0, sample)) {
    const f = detectFormat(columnsOf([r]), opts.textField);
    if (f !== undefined) votes.set(f, (votes.get(f) ?? 0) + 1);
  }
  const best = [...votes.entries()].sort((a, b) => b[1] - a[1])[0];
  if (best === undefined) {
    throw new DataError(
      `${where}: no known format in columns [${[...cols].join(', ')}]; expected messages, prompt+completion, instruction+response, ` +
        `instruction+output, prompt_text (video style) or the text column "${opts.textField}" (dataset_text_field); set dataset_format to override.`,
    );
  }
  return best[0];
}

/** Thrown inside conversion for a bad row; caught per row. */
class RowProblem extends Error {}

function str(values: Record<string, unknown>, key: string, required: boolean): string | undefined {
  const v = values[key];
  if (v === undefined || v === null) {
    if (required) throw new RowProblem(`missing "${key}"`);
    return undefined;
  }
  if (typeof v !== 'string') throw new RowProblem(`"${key}" is ${Array.isArray(v) ? 'a list' : typeof v}, not a string`);
  return v.normalize('NFC');
}

function nonEmpty(s: string, key: string): string {
  if (s.trim() === '') throw new RowProblem(`empty "${key}"`);
  return s;
}

const ROLE_ALIASES: Record<string, ChatMessage['role']> = {
  system: 'system', user: 'user', assistant: 'assistant', tool: 'tool', human: 'user', gpt: 'assistant', model: 'assistant',
};

function toMessages(value: unknown, key: string): ChatMessage[] {
  if (!Array.isArray(value)) throw new RowProblem(`"${key}" is ${typeof value}, not a list of messages`);
  return value.map((m, i) => {
    if (m === null || typeof m !== 'object') throw new RowProblem(`"${key}"[${i}] is not an object`);
    const o = m as Record<string, unknown>;
    const roleRaw = o.role ?? o.from;
    const content = o.content ?? o.value;
    const role = typeof roleRaw === 'string' ? ROLE_ALIASES[roleRaw] : undefined;
    if (role === undefined) throw new RowProblem(`"${key}"[${i}] has role ${JSON.stringify(roleRaw)}; expected system, user, assistant or tool`);
    if (content === undefined || content === null) throw new RowProblem(`"${key}"[${i}].content is missing`);
    if (typeof content !== 'string') throw new RowProblem(`"${key}"[${i}].content is ${typeof content}, not a string`);
    return { role, content: content.normalize('NFC') };
  });
}

function withSystem(messages: ChatMessage[], systemPrompt: string | null): ChatMessage[] {
  if (systemPrompt === null || messages[0]?.role === 'system') return messages;
  return [{ role: 'system', content: systemPrompt }, ...messages];
}

function checkConversation(messages: ChatMessage[]): ChatMessage[] {
  const assistants = messages.filter((m) => m.role === 'assistant');
  if (assistants.length === 0) throw new RowProblem('no assistant message');
  if (assistants.some((m) => m.content.trim() === '')) throw new RowProblem('empty assistant message');
  return messages;
}

function prefixed(prefix: string, text: string): string {
  return prefix !== '' && !text.startsWith(prefix) ? prefix + text : text;
}

/** `### Name:\nvalue` blocks, the seed's instruction rendering. */
function blocks(entries: [string, string | undefined][]): string {
  return entries
    .filter((e): e is [string, string] => e[1] !== undefined && e[1].trim() !== '')
    .map(([name, v]) => `### ${name}:\n${v}`)
    .join('\n\n');
}

/** A user turn + assistant turn, as a chat or as the seed's blocks split at `### Response:`. */
function instructionExample(
  opts: FormatOptions,
  user: { instruction: string; context: [string, string | undefined][] },
  response: string,
  after: [string, string | undefined][],
): Example {
  if (opts.instructionFormat === 'alpaca') {
    const prompt = blocks([['Instruction', user.instruction], ...user.context]) + '\n\n### Response:\n';
    const tail = blocks(after);
    return { kind: 'completion', prompt, completion: tail === '' ? response : `${response}\n\n${tail}` };
  }
  const context = user.context.filter((e): e is [string, string] => e[1] !== undefined && e[1].trim() !== '');
  const userText = prefixed(opts.userPrefix, user.instruction) + context.map(([n, v]) => `\n${n}: ${v}`).join('');
  return { kind: 'chat', messages: withSystem([{ role: 'user', content: userText }, { role: 'assistant', content: response }], opts.systemPrompt) };
}

function convertRow(v: Record<string, unknown>, format: DatasetFormatName, opts: FormatOptions): Example {
  switch (format) {
    case 'messages': {
      const key = v.messages !== undefined && v.messages !== null ? 'messages' : 'conversations';
      return { kind: 'chat', messages: checkConversation(withSystem(toMessages(v[key], key), opts.systemPrompt)) };
    }
    case 'prompt_completion': {
      if (Array.isArray(v.prompt) || Array.isArray(v.completion)) {
        const prompt = toMessages(v.prompt, 'prompt');
        const completion = toMessages(v.completion, 'completion');
        return { kind: 'chat', messages: checkConversation(withSystem([...prompt, ...completion], opts.systemPrompt)) };
      }
      const prompt = nonEmpty(str(v, 'prompt', true)!, 'prompt');
      const completion = nonEmpty(str(v, 'completion', true)!, 'completion');
      if (opts.instructionFormat === 'alpaca') return { kind: 'completion', prompt, completion };
      return instructionExample(opts, { instruction: prompt, context: [] }, completion, []);
    }
    case 'instruction_response': {
      const key = v.instruction === undefined && v.prompt !== undefined ? 'prompt' : 'instruction';
      const instruction = nonEmpty(str(v, key, true)!, key);
      const response = nonEmpty(str(v, 'response', true)!, 'response');
      return instructionExample(
        opts,
        { instruction, context: [['Style', str(v, 'style_name', false)], ['Camera', str(v, 'camera_movement', false)], ['Context', str(v, 'scene_context', false)]] },
        response,
        [['Negative Prompt', str(v, 'negative_prompt', false)], ['Tags', tagsOf(v)]],
      );
    }
    case 'instruction_output': {
      const instruction = nonEmpty(str(v, 'instruction', true)!, 'instruction');
      const input = str(v, 'input', false);
      const output = nonEmpty(str(v, 'output', true)!, 'output');
      const full = input !== undefined && input.trim() !== '' ? `${instruction}\n\n${input}` : instruction;
      return instructionExample(opts, { instruction: full, context: [] }, output, []);
    }
    case 'video_style': {
      const style = nonEmpty(str(v, 'style_name', true)!, 'style_name');
      const response = nonEmpty(str(v, 'prompt_text', true)!, 'prompt_text');
      if (opts.instructionFormat === 'alpaca') {
        return instructionExample(opts, { instruction: VIDEO_STYLE_INSTRUCTION, context: [['Style', style]] }, response, [
          ['Negative Prompt', str(v, 'negative_prompt', false)],
          ['Tags', tagsOf(v)],
        ]);
      }
      return instructionExample(opts, { instruction: style, context: [] }, response, []);
    }
    case 'text':
      return { kind: 'text', text: nonEmpty(str(v, opts.textField, true)!, opts.textField) };
  }
}

/** `tags` as a string, or a list of strings joined with ", ". */
function tagsOf(v: Record<string, unknown>): string | undefined {
  if (Array.isArray(v.tags) && v.tags.every((t) => typeof t === 'string')) return (v.tags as string[]).join(', ').normalize('NFC');
  return str(v, 'tags', false);
}

/** Converts rows of one split; unusable rows are returned with their file, row and reason. */
export function convertRows(rows: readonly RawRow[], split: SplitName, format: DatasetFormatName, opts: FormatOptions): { examples: SourcedExample[]; bad: BadRow[] } {
  const examples: SourcedExample[] = [];
  const bad: BadRow[] = [];
  for (const r of rows) {
    if (r.values === undefined) {
      bad.push({ split, file: r.file, row: r.row, reason: r.error ?? 'unreadable' });
      continue;
    }
    try {
      examples.push({ example: convertRow(r.values, format, opts), split, file: r.file, row: r.row });
    } catch (e) {
      if (!(e instanceof RowProblem)) throw e;
      bad.push({ split, file: r.file, row: r.row, reason: e.message });
    }
  }
  return { examples, bad };
}

/** The text the loss is about (the assistant turns, the completion or the whole text), for quality checks. */
export function responseText(e: Example): string {
  if (e.kind === 'chat') return e.messages.filter((m) => m.role === 'assistant').map((m) => m.content).join('\n');
  if (e.kind === 'completion') return e.completion;
  return e.text;
}

/** The input side (user turns or the prompt); empty for text examples. */
export function promptText(e: Example): string {
  if (e.kind === 'chat') return e.messages.filter((m) => m.role === 'user').map((m) => m.content).join('\n');
  if (e.kind === 'completion') return e.prompt;
  return '';
}
