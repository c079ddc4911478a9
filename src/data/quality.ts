/**
 * The seed's dataset quality gate (its v7 builder), as per-row warnings on the trained text:
 *   word_count        response outside 30–90 words
 *   sd_parameters     Stable-Diffusion parameter text (--ar, --seed, 4K/8K/1080p, fps, HDR,
 *                     "motion blur", "shallow depth of field", (word:1.2) weights)
 *   screenplay_label  labels at line starts (Scene 3:, Camera:, Lighting:, Mood: …)
 *   leakage           instruction leakage ("include the following", "requirements:", numbered
 *                     lists, "Here's", "Certainly", "Sure")
 *   echo              more than half of the response's words appear in the instruction
 *   repeated_5gram    a 5-word phrase occurring more than twice in the response
 * plus, over the whole dataset, phrases that dominate (a 4-word phrase in > 25% of responses).
 */

export const QUALITY_CHECKS = ['word_count', 'sd_parameters', 'screenplay_label', 'leakage', 'echo', 'repeated_5gram'] as const;
export type QualityCheck = (typeof QUALITY_CHECKS)[number];

export interface QualityLimits {
  minWords: number;
  maxWords: number;
  /** Echo: share of response words found in the instruction above which a row is flagged. */
  maxEchoShare: number;
  /** Times a 5-gram may occur in one response. */
  maxFiveGramRepeats: number;
  /** Share of responses a 4-word phrase may appear in. */
  maxPhraseShare: number;
}

export const SEED_QUALITY_LIMITS: QualityLimits = { minWords: 30, maxWords: 90, maxEchoShare: 0.5, maxFiveGramRepeats: 2, maxPhraseShare: 0.25 };

const SD_PARAMETERS: RegExp[] = [
  /(^|\s)--(ar|seed|v|q|s|stylize|chaos|niji|no|style|quality|iw)\b/i,
  /\b(4k|8k|16k|1080p|720p|2160p|4320p)\b/i,
  /\b\d+\s?fps\b/i,
  /\bhdr\b/i,
  /motion blur/i,
  /shallow depth of field/i,
  /\(\s*[\p{L}\s]+:\s*\d(\.\d+)?\s*\)/u,
];
const SCREENPLAY_LABEL =
  /^\s*(scene\s*\d*|shot\s*\d*|camera( movement)?|lighting|mood|style|setting|angle|subject|atmosphere|composition|colou?r palette|tags|negative prompt|sound|music|action|transition)\s*:/im;
const LEAKAGE: RegExp[] = [/include the following/i, /requirements\s*:/i, /^\s*\d+[.)]\s/m, /\bhere'?s\b/i, /\bhere is (a|an|the|your)\b/i, /\bcertainly\b/i, /^\s*sure\b/i, /\bas an ai\b/i];

/** Lowercase words of letters and digits (apostrophes kept inside words). */
export function words(s: string): string[] {
  return s.toLowerCase().match(/[\p{L}\p{N}]+(?:'[\p{L}]+)?/gu) ?? [];
}

/** The checks `response` fails, given its instruction (user text without the configured prefix). */
export function checkResponse(response: string, instruction: string, limits: QualityLimits = SEED_QUALITY_LIMITS): QualityCheck[] {
  const failed: QualityCheck[] = [];
  const w = words(response);
  if (w.length < limits.minWords || w.length > limits.maxWords) failed.push('word_count');
  if (SD_PARAMETERS.some((r) => r.test(response))) failed.push('sd_parameters');
  if (SCREENPLAY_LABEL.test(response)) failed.push('screenplay_label');
  if (LEAKAGE.some((r) => r.test(response))) failed.push('leakage');
  if (instruction.trim() !== '' && w.length > 0) {
    const inInstruction = new Set(words(instruction));
    if (w.filter((x) => inInstruction.has(x)).length / w.length > limits.maxEchoShare) failed.push('echo');
  }
  const grams = new Map<string, number>();
  for (let i = 0; i + 5 <= w.length; i++) {
    const g = w.slice(i, i + 5).join(' ');
    grams.set(g, (grams.get(g) ?? 0) + 1);
  }
  if ([...grams.values()].some((n) => n > limits.maxFiveGramRepeats)) failed.push('repeated_5gram');
  return failed;
}

export interface PhraseShare {
  phrase: string;
  /** Responses containing it. */
  rows: number;
  share: number;
}

/** The n-word phrases found in the most responses (each response counted once per phrase). */
export function topPhrases(responses: readonly string[], n: number, limit: number): PhraseShare[] {
  const df = new Map<string, number>();
  for (const r of responses) {
    const w = words(r);
    const seen = new Set<string>();
    for (let i = 0; i + n <= w.length; i++) seen.add(w.slice(i, i + n).join(' '));
    for (const g of seen) df.set(g, (df.get(g) ?? 0) + 1);
  }
  return [...df.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, limit)
    .map(([phrase, rows]) => ({ phrase, rows, share: responses.length === 0 ? 0 : rows / responses.length }));
}

/** The share of responses whose first `n` words are the most common opening. */
export function topOpenings(responses: readonly string[], n: number, limit: number): PhraseShare[] {
  const counts = new Map<string, number>();
  for (const r of responses) {
    const key = words(r).slice(0, n).join(' ');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, limit)
    .map(([phrase, rows]) => ({ phrase, rows, share: responses.length === 0 ? 0 : rows / responses.length }));
}
