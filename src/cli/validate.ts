/**
 * `prompt-lora validate --dataset PATH|HUB_ID [--config FILE] [--json]`: reads the dataset the
 * way a run would and reports what would go wrong. Exit status 1 when the data cannot train.
 */
import { formatFlags, parseConfigArgs, CONFIG_FLAGS, type FlagSpec } from '../config/args.js';
import { loadConfig } from '../config/load.js';
import { runTokenizer } from './dry-run.js';
import { embeddedDefaultConfigPath } from './train-defaults.js';
import { hubOptionsFromEnv } from '../data/hub.js';
import { QUALITY_CHECKS } from '../data/quality.js';
import { buildDataReport, NEAR_DUPLICATE_RATIO, type DataReport, type RowRef } from '../data/report.js';

const VALIDATE_FLAGS: readonly FlagSpec[] = [
  { name: 'json', takesValue: false, help: 'print the report as JSON' },
  { name: 'help', takesValue: false, help: 'show this help' },
];

export interface CommandIo {
  env?: Readonly<Record<string, string | undefined>>;
  out?: (text: string) => void;
  err?: (text: string) => void;
}

export async function runValidate(argv: string[], io: CommandIo = {}): Promise<number> {
  const out = io.out ?? ((s: string) => console.log(s));
  const err = io.err ?? ((s: string) => console.error(s));
  const args = parseConfigArgs(argv, 'validate', VALIDATE_FLAGS);
  if (args.flags.has('help')) {
    out(`usage: prompt-lora validate --dataset PATH|HUB_ID [--config FILE] [--json]\n\n${formatFlags([...CONFIG_FLAGS.filter((f) => f.name !== 'dry-run'), ...VALIDATE_FLAGS])}`);
    return 0;
  }
  // Without --config, the config `node train.js` runs (the embedded default): the same max_seq_length and rendering.
  const { config, warnings } = loadConfig(args.configPath ?? embeddedDefaultConfigPath(), args.overrides);
  const hub = hubOptionsFromEnv(io.env ?? process.env);
  const { tokenizer, note } = await runTokenizer(config, hub);
  const report = await buildDataReport(config, tokenizer, hub);
  report.warnings.unshift(...warnings.map((w) => `config ${w}`));
  if (note !== undefined) report.notes.unshift(note);
  if (args.flags.has('json')) out(JSON.stringify(report, null, 2));
  else out(formatDataReport(report));
  if (report.errors.length > 0) {
    err(`validate: the data cannot train (${report.errors.length} error${report.errors.length > 1 ? 's' : ''})`);
    return 1;
  }
  return 0;
}

function refText(r: RowRef): string {
  return `${r.file}:${r.row}`;
}

function refList(refs: readonly RowRef[], limit = 8): string {
  const shown = refs.slice(0, limit).map(refText).join(', ');
  return refs.length > limit ? `${shown}, … (${refs.length} in all)` : shown;
}

/** The human-readable report. */
export function formatDataReport(r: DataReport): string {
  const lines: string[] = [];
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  lines.push(`dataset   ${r.dataset}${r.resolvedPath !== '' && r.resolvedPath !== r.dataset ? ` (${r.source}: ${r.resolvedPath})` : ''}`);
  lines.push(`format    ${r.format}`);
  for (const f of r.files) lines.push(`  file    ${f.file} → ${f.split}`);
  for (const [split, n] of Object.entries(r.rows)) lines.push(`rows      ${split.padEnd(10)} ${n.read} read, ${n.usable} usable`);
  if (r.evalSplit !== '') lines.push(r.evalSplit);
  if (r.badRows.count > 0) {
    lines.push(`bad rows  ${r.badRows.count} (${pct(r.badRows.share)}), skipped:`);
    for (const b of r.badRows.rows.slice(0, 20)) lines.push(`  ${b.file} row ${b.row} (${b.split}): ${b.reason}`);
    if (r.badRows.count > 20) lines.push(`  … and ${r.badRows.count - 20} more`);
  }
  for (const [split, t] of Object.entries(r.tokens)) {
    lines.push(`tokens    ${split}: ${t.examples} examples, mean ${t.mean.toFixed(1)}, p50 ${t.p50}, p90 ${t.p90}, p95 ${t.p95}, p99 ${t.p99}, max ${t.max} (max_seq_length ${r.maxSeqLength}); ${t.truncated} truncated, ${t.noLoss} left with no trained token`);
    const peak = Math.max(1, ...t.histogram.map((h) => h.count));
    for (const h of t.histogram) {
      const label = h.to === null ? `> ${h.from}` : `${h.from + 1}–${h.to}`;
      lines.push(`  ${label.padStart(11)} ${String(h.count).padStart(6)} ${'█'.repeat(Math.round((h.count / peak) * 40))}`);
    }
  }
  lines.push(`duplicates exact ${r.duplicates.exact.length}, near (token-sort ratio ≥ ${NEAR_DUPLICATE_RATIO}) ${r.duplicates.near.length}`);
  for (const d of r.duplicates.near.slice(0, 8)) lines.push(`  ${refText(d.a)} ~ ${refText(d.b)} (${d.ratio})`);
  lines.push(`overlap   train/validation exact ${r.overlap.exact.length}, near ${r.overlap.near.length}`);
  for (const o of r.overlap.near.slice(0, 8)) lines.push(`  ${refText(o.train)} ~ ${refText(o.validation)} (${o.ratio})`);
  lines.push('quality   (the seed gate: 30–90 words, no SD parameters, no screenplay labels, no leakage, no echo, no repeated 5-grams)');
  for (const c of QUALITY_CHECKS) lines.push(`  ${c.padEnd(17)} ${String(r.quality[c].length).padStart(5)}${r.quality[c].length > 0 ? `  ${refList(r.quality[c])}` : ''}`);
  if (r.topPhrases.length > 0) lines.push(`phrases   most common 4-word phrases: ${r.topPhrases.map((p) => `"${p.phrase}" ${pct(p.share)}`).join(', ')}`);
  if (r.topOpenings.length > 0) lines.push(`openings  ${r.topOpenings.map((p) => `"${p.phrase}" ${pct(p.share)}`).join(', ')}`);
  for (const n of r.notes) lines.push(`note      ${n}`);
  for (const w of r.warnings) lines.push(`warning   ${w}`);
  for (const e of r.errors) lines.push(`error     ${e}`);
  lines.push(r.errors.length === 0 ? 'result    the data can train' : 'result    the data cannot train');
  return lines.join('\n');
}
