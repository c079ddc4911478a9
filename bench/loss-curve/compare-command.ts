/**
 * `node dist/bench/loss-curve-compare.js`: trains the config twice on the embedded model (f32
 * path, then tensor cores; run-settings.ts lists what changes), each with `node train.js` in a
 * subprocess into its own fresh folder under --out, then compares their eval losses
 * (curve-compare.ts) and writes loss-curve-compare.{json,md} into --out (compare-record.ts).
 *
 * Exit status: 0 pass (or, with --allow-same-path, the curves agree on the same path); 1 a check
 * failed (a loss beyond the tolerance, evaluations that do not line up, a run that failed or did
 * not take its path) or a wrong argument; 2 the adapter has no tensor cores (checked before
 * training, with the same rule the trainer applies: tensorCoreUnsupportedReason).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { packageRoot } from '../../src/config/paths.js';
import type { TrainConfig } from '../../src/config/schema.js';
import { ConfigError, TrainerError } from '../../src/errors.js';
import { writeFileAtomic } from '../../src/io/atomic-file.js';
import { Gpu } from '../../src/kernels/gpu.js';
import { tensorCoreUnsupportedReason } from '../../src/model/compute-path.js';
import { embeddedConfig } from '../../src/model/embedded.js';
import { commonChanges, computeDtype, defaultEvalSteps, runOverrides, trainArgs, type CompareRunName, type CompareSettings } from './run-settings.js';
import { compareCurves } from './curve-compare.js';
import { formatJson, formatMarkdown, formatTable, RECORD_FILES, RECORD_FORMAT, verdictLine, type CompareRecord, type RunEntry } from './compare-record.js';
import { readPrintedComputePath, readRunEvals } from './run-readout.js';

export const USAGE = `usage: node dist/bench/loss-curve-compare.js --out DIR [--config FILE] [--steps N] [--eval-steps K]
       [--tolerance 0.02] [--set key=value ...] [--allow-same-path] [--compare-only]

Trains FILE (default configs/qwen3-4b-deforum-v7.yaml) twice on the embedded model, compute_dtype
float32 and float16 (tensor cores), N steps (default 200) with an evaluation every K (default N/5),
into DIR/f32 and DIR/tensor-cores (fresh folders; logs DIR/f32.log, DIR/tensor-cores.log), then
checks the tensor-core eval loss within the tolerance of the f32 one at every evaluation and writes
DIR/${RECORD_FILES.json} and DIR/${RECORD_FILES.markdown}.
  --set key=value    a further config change for both runs (repeatable; recorded)
  --allow-same-path  smoke test on an adapter without tensor cores: the second run takes
                     compute_dtype auto (the f32 path there); never the item-7 check
  --compare-only     train nothing: compare the runs already in DIR/f32 and DIR/tensor-cores
Exit: 0 pass, 1 fail, 2 no tensor cores on this adapter.`;

/** The resolved settings both runs keep from the config, for the record. */
const KEPT_KEYS = [
  'dataset_id', 'max_seq_length', 'completion_only_loss', 'packing', 'group_by_length', 'seed',
  'lora_r', 'lora_alpha', 'lora_dropout', 'lora_target_modules', 'use_rslora',
  'use_4bit', 'bnb_4bit_quant_type', 'bnb_4bit_use_double_quant', 'gradient_checkpointing',
  'per_device_train_batch_size', 'per_device_eval_batch_size', 'gradient_accumulation_steps',
  'learning_rate', 'lr_scheduler_type', 'lr_scheduler_kwargs', 'warmup_ratio', 'warmup_steps', 'weight_decay',
  'optim', 'adam_beta1', 'adam_beta2', 'adam_epsilon', 'max_grad_norm', 'logging_steps', 'num_train_epochs', 'load_best_model_at_end',
] as const satisfies readonly (keyof TrainConfig)[];

const RUNS: readonly CompareRunName[] = ['f32', 'tensor-cores'];

interface Options {
  readonly configPath: string;
  readonly out: string;
  readonly steps: number;
  readonly evalSteps: number;
  readonly tolerance: number;
  readonly extra: readonly string[];
  readonly allowSamePath: boolean;
  readonly compareOnly: boolean;
}

function parseOptions(argv: readonly string[], cwd: string): Options | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      config: { type: 'string', default: 'configs/qwen3-4b-deforum-v7.yaml' },
      out: { type: 'string' },
      steps: { type: 'string', default: '200' },
      'eval-steps': { type: 'string' },
      tolerance: { type: 'string', default: '0.02' },
      set: { type: 'string', multiple: true, default: [] },
      'allow-same-path': { type: 'boolean', default: false },
      'compare-only': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return 'help';
  if (values.out === undefined) throw new ConfigError('loss-curve-compare: --out DIR is required (a folder for the two runs and the record)');
  const whole = (flag: string, text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`loss-curve-compare: --${flag} ${text}: expected a whole number ≥ 1`);
    return n;
  };
  const steps = whole('steps', values.steps);
  const evalSteps = values['eval-steps'] === undefined ? defaultEvalSteps(steps) : whole('eval-steps', values['eval-steps']);
  if (evalSteps > steps) throw new ConfigError(`loss-curve-compare: --eval-steps ${evalSteps} is more than --steps ${steps}: no evaluation would run`);
  const tolerance = Number(values.tolerance);
  if (!(tolerance > 0 && tolerance < 1)) throw new ConfigError(`loss-curve-compare: --tolerance ${values.tolerance}: expected a fraction in (0, 1), e.g. 0.02 for 2%`);
  for (const s of values.set) if (!s.includes('=')) throw new ConfigError(`loss-curve-compare: --set ${s}: expected key=value`);
  return {
    configPath: resolve(cwd, values.config),
    out: resolve(cwd, values.out),
    steps,
    evalSteps,
    tolerance,
    extra: values.set,
    allowSamePath: values['allow-same-path'],
    compareOnly: values['compare-only'],
  };
}

/** The adapter in words, and why it cannot take the tensor-core path for the embedded model (undefined: it can). */
async function probeAdapter(): Promise<{ device: string; unsupported?: string }> {
  const gpu = await Gpu.open();
  try {
    return { device: gpu.describe(), unsupported: tensorCoreUnsupportedReason(gpu, embeddedConfig()) };
  } finally {
    gpu.destroy();
  }
}

/** Runs `node train.js args` in the package root; its output goes to `logPath` and, prefixed, to `echo`. */
function runTrainer(root: string, args: readonly string[], logPath: string, label: string, echo: (line: string) => void): Promise<{ exitCode: number; seconds: number }> {
  const t0 = performance.now();
  const log = createWriteStream(logPath, { flags: 'wx' });
  log.write(`$ node train.js ${args.join(' ')}\n`);
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(root, 'train.js'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        log.write(chunk);
        pending += chunk;
        const lines = pending.split(/\r?\n|\r/);
        pending = lines.pop() ?? '';
        for (const l of lines) echo(`[${label}] ${l}`);
      });
      stream.on('end', () => {
        if (pending !== '') echo(`[${label}] ${pending}`);
      });
    }
    child.on('error', fail);
    child.on('close', (code, signal) => {
      log.end(() => done({ exitCode: code ?? (signal ? 128 : 1), seconds: (performance.now() - t0) / 1000 }));
    });
  });
}

/** compute_dtype as the run's own config.yaml has it (null when the file is missing or unreadable). */
function recordedComputeDtype(runDir: string): string | null {
  try {
    const c = parseYaml(readFileSync(join(runDir, 'config.yaml'), 'utf8')) as { compute_dtype?: unknown };
    return typeof c.compute_dtype === 'string' ? c.compute_dtype : null;
  } catch {
    return null;
  }
}

/** The whole command; returns the exit status. `out` receives every printed line. */
export async function runLossCurveCompare(argv: readonly string[], out: (line: string) => void = (l) => console.log(l), cwd: string = process.cwd()): Promise<number> {
  let o: Options | 'help';
  try {
    o = parseOptions(argv, cwd);
  } catch (e) {
    out(e instanceof TrainerError ? e.message : `loss-curve-compare: ${(e as Error).message}`);
    out(USAGE);
    return 1;
  }
  if (o === 'help') {
    out(USAGE);
    return 0;
  }
  const root = packageRoot();
  const base = loadConfig(o.configPath).config;
  const settings: CompareSettings = { steps: o.steps, evalSteps: o.evalSteps, seed: base.seed, extra: o.extra };
  const dirs = { f32: join(o.out, 'f32'), 'tensor-cores': join(o.out, 'tensor-cores') };
  const logs = { f32: join(o.out, 'f32.log'), 'tensor-cores': join(o.out, 'tensor-cores.log') };
  // Both runs' configs must load before any training (a wrong --set fails here, naming the key).
  for (const run of RUNS) loadConfig(o.configPath, { outputDir: dirs[run], set: runOverrides(settings, run, o.allowSamePath) });

  const ran: Partial<Record<CompareRunName, { exitCode: number; seconds: number }>> = {};
  let device: string | null = null;
  if (!o.compareOnly) {
    for (const p of [...Object.values(dirs), ...Object.values(logs)]) {
      if (existsSync(p)) {
        out(`loss-curve-compare: ${p} already exists: runs are never overwritten. Choose a new --out, or pass --compare-only to compare the runs already there.`);
        return 1;
      }
    }
    const probe = await probeAdapter();
    device = probe.device;
    out(`device: ${device}`);
    if (probe.unsupported !== undefined) {
      if (!o.allowSamePath) {
        out(`tensor-core path unavailable: ${probe.unsupported}. Nothing was trained. Run this on an adapter with subgroup matrices (the H200), or pass --allow-same-path for a smoke test of the tool itself.`);
        return 2;
      }
      out(`tensor-core path unavailable (${probe.unsupported}); --allow-same-path: the second run takes compute_dtype auto, a smoke test only`);
    }
    await mkdir(o.out, { recursive: true });
    for (const run of RUNS) {
      const args = trainArgs(o.configPath, dirs[run], settings, run, o.allowSamePath);
      out(`── ${run} run: node train.js ${args.join(' ')}`);
      const r = await runTrainer(root, args, logs[run], run, out);
      ran[run] = r;
      out(`── ${run} run: exit ${r.exitCode} after ${r.seconds.toFixed(1)} s (log ${logs[run]})`);
      if (r.exitCode !== 0) break;
    }
  }

  const [f32, tensorCores] = await Promise.all(RUNS.map((run) => readRunEvals(dirs[run])));
  const [f32Printed, tcPrinted] = await Promise.all(RUNS.map((run) => readPrintedComputePath(logs[run])));
  const comparison0 = compareCurves({
    f32,
    tensorCores,
    f32Path: f32Printed?.path,
    tensorCoresPath: tcPrinted?.path,
    tolerance: o.tolerance,
    allowSamePath: o.allowSamePath,
    f32Dir: dirs.f32,
    tensorCoresDir: dirs['tensor-cores'],
  });
  const failedRuns = RUNS.filter((run) => ran[run] !== undefined && ran[run].exitCode !== 0).map((run) => `the ${run} run exited with ${ran[run]?.exitCode}; see ${logs[run]}`);
  const skipped = o.compareOnly ? [] : RUNS.filter((run) => ran[run] === undefined).map((run) => `the ${run} run was not started (the run before it failed)`);
  const comparison = failedRuns.length + skipped.length > 0 ? { ...comparison0, verdict: 'fail' as const, problems: [...failedRuns, ...skipped, ...comparison0.problems] } : comparison0;

  const entry = (run: CompareRunName, printed: typeof f32Printed): RunEntry => ({
    dir: dirs[run],
    log: logs[run],
    computeDtype: recordedComputeDtype(dirs[run]) ?? (o.compareOnly ? 'unknown' : computeDtype(run, o.allowSamePath)),
    printedComputePath: printed?.line ?? null,
    wallSeconds: ran[run]?.seconds ?? null,
    exitCode: ran[run]?.exitCode ?? null,
  });
  const record: CompareRecord = {
    format: RECORD_FORMAT,
    createdAt: new Date().toISOString(),
    command: `node dist/bench/loss-curve-compare.js ${argv.join(' ')}`,
    config: o.configPath,
    device,
    steps: o.steps,
    evalSteps: o.evalSteps,
    tolerance: o.tolerance,
    keptFromConfig: Object.fromEntries(KEPT_KEYS.map((k) => [k, base[k]])),
    changed: commonChanges(settings),
    extraSets: o.extra,
    runs: { f32: entry('f32', f32Printed), tensorCores: entry('tensor-cores', tcPrinted) },
    comparison,
  };
  await mkdir(o.out, { recursive: true });
  await writeFileAtomic(join(o.out, RECORD_FILES.json), formatJson(record));
  await writeFileAtomic(join(o.out, RECORD_FILES.markdown), formatMarkdown(record));

  out('');
  for (const l of formatTable(comparison)) out(l);
  out('');
  for (const p of comparison.problems) out(`problem: ${p}`);
  for (const n of comparison.notes) out(`note: ${n}`);
  for (const run of RUNS) if (ran[run]) out(`${run} run: ${ran[run].seconds.toFixed(1)} s`);
  out(verdictLine(comparison, o.tolerance));
  out(`record: ${join(o.out, RECORD_FILES.json)}, ${join(o.out, RECORD_FILES.markdown)}`);
  return comparison.verdict === 'fail' ? 1 : 0;
}
