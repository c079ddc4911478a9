/**
 * Command-line flags shared by the commands that read a config: `--config FILE`, `--model ID`,
 * `--dataset ID`, `--output-dir DIR`, `--dry-run`, `--set key=value` (repeatable). Both
 * `--flag value` and `--flag=value` work. Unknown flags are errors naming the nearest flag.
 */
import { ConfigError } from '../errors.js';
import type { ConfigOverrides } from './load.js';
import { nearest } from './nearest.js';

export interface FlagSpec {
  /** Without the leading dashes. */
  name: string;
  takesValue: boolean;
  /** With takesValue: the value may be left out (`--resume` alone, or followed by another --flag). */
  optionalValue?: boolean;
  repeatable?: boolean;
  help: string;
}

export const CONFIG_FLAGS: readonly FlagSpec[] = [
  { name: 'config', takesValue: true, help: 'YAML config file' },
  { name: 'model', takesValue: true, help: 'model_id: local folder or Hugging Face Hub id' },
  { name: 'dataset', takesValue: true, help: 'dataset_id: local file/folder or Hub dataset id' },
  { name: 'output-dir', takesValue: true, help: 'output_dir' },
  { name: 'dry-run', takesValue: false, help: 'print a rendered example, token counts and steps, then exit before loading weights' },
  { name: 'set', takesValue: true, repeatable: true, help: 'key=value for any config key (value read as YAML); repeatable' },
];

/** Flag name → its values (flags without a value map to `[]`). */
export type ParsedFlags = Map<string, string[]>;

/** Parses `argv` against `specs`; positional arguments are refused. */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[], command: string): ParsedFlags {
  const out: ParsedFlags = new Map();
  const names = specs.map((s) => s.name);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new ConfigError(`${command}: unexpected argument "${arg}"; options start with -- (${names.map((n) => `--${n}`).join(', ')})`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = specs.find((s) => s.name === name);
    if (spec === undefined) throw new ConfigError(`${command}: unknown option --${name}; did you mean --${nearest(name, names)}?`);
    let value: string | undefined;
    if (spec.takesValue) {
      if (eq >= 0) value = arg.slice(eq + 1);
      else {
        value = argv[i + 1];
        if (value === undefined || value.startsWith('--')) {
          if (!spec.optionalValue) throw new ConfigError(`${command}: --${name} needs a value`);
          value = undefined;
        } else i++;
      }
    } else if (eq >= 0) throw new ConfigError(`${command}: --${name} takes no value`);
    const prev = out.get(name);
    if (prev !== undefined && !spec.repeatable) throw new ConfigError(`${command}: --${name} given twice`);
    out.set(name, value === undefined ? (prev ?? []) : [...(prev ?? []), value]);
  }
  return out;
}

export interface ConfigArgs {
  configPath: string | undefined;
  overrides: ConfigOverrides;
  dryRun: boolean;
  /** Every parsed flag, including the command's own extras. */
  flags: ParsedFlags;
}

/** Parses the shared config flags plus `extra` ones of the calling command. */
export function parseConfigArgs(argv: readonly string[], command: string, extra: readonly FlagSpec[] = []): ConfigArgs {
  const flags = parseFlags(argv, [...CONFIG_FLAGS, ...extra], command);
  const one = (n: string) => flags.get(n)?.[0];
  return {
    configPath: one('config'),
    overrides: { model: one('model'), dataset: one('dataset'), outputDir: one('output-dir'), set: flags.get('set') ?? [] },
    dryRun: flags.has('dry-run'),
    flags,
  };
}

/** Help text for a flag list. */
export function formatFlags(specs: readonly FlagSpec[]): string {
  const heads = specs.map((s) => `  --${s.name}${s.takesValue ? (s.optionalValue ? ' [VALUE]' : ' VALUE') : ''}`);
  // The help column starts two spaces after the longest flag, so no flag runs into its text.
  const width = Math.max(24, ...heads.map((h) => h.length + 2));
  return heads.map((h, i) => h.padEnd(width) + specs[i].help).join('\n');
}
