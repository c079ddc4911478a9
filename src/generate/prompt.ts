import { DEFAULT_SYSTEM_PROMPT } from '../config/schema.js';
import { generationPrompt } from '../data/render.js';
import { ConfigError } from '../errors.js';
import type { ChatMessage, QwenTokenizer } from '../model/tokenizer.js';

/**
 * What a generation starts from: raw text (no template), a conversation (rendered with the model's
 * chat template exactly as training renders it, plus the template's generation prompt), or token ids.
 */
export type GenerationInput = { readonly prompt: string } | { readonly messages: readonly ChatMessage[] } | { readonly tokens: readonly number[] };

export interface ChatOptions {
  /**
   * System message put first when the conversation has none, as training does with the config's
   * system_prompt (default: the project's DEFAULT_SYSTEM_PROMPT); null: none.
   */
  readonly systemPrompt?: string | null;
  /** The template's enable_thinking (training's default: false). */
  readonly enableThinking?: boolean;
}

/** `messages` with the system prompt first when it has none and one is set (training's rule). */
export function withSystemPrompt(messages: readonly ChatMessage[], systemPrompt: string | null): ChatMessage[] {
  if (systemPrompt === null || messages[0]?.role === 'system') return [...messages];
  return [{ role: 'system', content: systemPrompt }, ...messages];
}

/**
 * One user turn as training renders a bare instruction: the user prefix put before it (unless the
 * text already starts with it, as the dataset readers do).
 */
export function userTurn(text: string, userPrefix: string): ChatMessage {
  return { role: 'user', content: userPrefix !== '' && !text.startsWith(userPrefix) ? userPrefix + text : text };
}

/** The text a conversation becomes: the model's template with the generation prompt. */
export function renderConversation(tok: QwenTokenizer, messages: readonly ChatMessage[], options: ChatOptions = {}): string {
  if (messages.length === 0) throw new ConfigError('generate: the conversation has no messages');
  const last = messages[messages.length - 1];
  if (last.role === 'assistant') {
    throw new ConfigError('generate: the conversation ends with an assistant message; end it with a user message (the model writes the next assistant turn)');
  }
  const systemPrompt = options.systemPrompt === undefined ? DEFAULT_SYSTEM_PROMPT : options.systemPrompt;
  return generationPrompt(tok, withSystemPrompt(messages, systemPrompt), options.enableThinking ?? false);
}

/** Token ids of the input; ids are checked against the vocabulary. */
export function inputTokens(tok: QwenTokenizer, input: GenerationInput, vocab: number, options: ChatOptions = {}): number[] {
  let ids: number[];
  if ('tokens' in input) ids = [...input.tokens];
  else if ('messages' in input) ids = tok.encode(renderConversation(tok, input.messages, options));
  else ids = tok.encode(input.prompt);
  if (ids.length === 0) throw new ConfigError('generate: the prompt is empty; give at least one token of text');
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new ConfigError(`generate: prompt token ${i} is ${id}; expected an id in [0, ${vocab})`);
  });
  return ids;
}
