import { TrainerError } from '../errors.js';

/**
 * The `prompt-lora` command dispatcher. Each subcommand lives in its own module and is loaded on
 * demand, so `prompt-lora validate` does not pay for the GPU runtime.
 */
interface Command {
  summary: string;
  run: (argv: string[]) => Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  train: {
    summary: 'fine-tune (the same as `node train.js`); with no --config, the embedded default run',
    run: async (argv) => (await import('./train.js')).runTrain(argv),
  },
  export: {
    summary: 'write the adapter, a merged model (Hugging Face folder, GGUF), a LoRA GGUF and an Ollama Modelfile',
    run: async (argv) => (await import('./export.js')).runExport(argv),
  },
  generate: {
    summary: 'generate text with the model (+ adapter) from a prompt or a chat, streamed to stdout',
    run: async (argv) => (await import('./generate.js')).runGenerate(argv),
  },
  inspect: {
    summary: 'run the forward pass on a batch and write loss, logits_last and layer outputs (safetensors)',
    run: async (argv) => (await import('./inspect.js')).runInspect(argv),
  },
  validate: {
    summary: 'check a dataset as a run would read it: format, splits, token lengths, duplicates, quality (exit 1 if it cannot train)',
    run: async (argv) => (await import('./validate.js')).runValidate(argv),
  },
};

export function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return ['usage: prompt-lora <command> [options]', '', 'commands:', ...rows, '', 'Run `prompt-lora <command> --help` for its options.'].join('\n');
}

/** Runs one subcommand; returns the process exit status. Errors print their message, not a stack. */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`prompt-lora: unknown command "${name}"\n\n${usage()}`);
    return 1;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof TrainerError) {
      console.error(`prompt-lora ${name}: ${e.message}`);
      return e.exitCode;
    }
    throw e;
  }
}
