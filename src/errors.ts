/**
 * One error hierarchy for the whole project. Every message says where, what was expected, what
 * was found and what to do. The CLI maps `exitCode` to the process exit status.
 */
export class TrainerError extends Error {
  /** Process exit status the CLI uses when this error ends a command. */
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A configuration file, key or command-line flag is wrong. */
export class ConfigError extends TrainerError {}

/** Tensor shapes disagree (between buffers, with config.json, or with an adapter). */
export class ShapeError extends TrainerError {}

/**
 * A checkpoint file (config.json, safetensors, index, tokenizer, a training checkpoint) is missing or
 * corrupt, or a training checkpoint cannot be written.
 */
export class CheckpointError extends TrainerError {}

/** Something would break a device limit (binding size, buffer size, memory). */
export class DeviceLimitError extends TrainerError {}

/** No WebGPU adapter, or the device was lost. */
export class DeviceError extends TrainerError {
  override readonly exitCode: number = 2;
}

/** A WGSL shader failed to compile or validate. */
export class ShaderError extends TrainerError {}

/** Dataset rows or files are wrong. */
export class DataError extends TrainerError {}

/** Writing an export (safetensors, GGUF, Modelfile) failed or was called out of order. */
export class ExportError extends TrainerError {}

/** Training diverged: a non-finite loss or gradient (the run stops, naming the last good checkpoint). */
export class NonFiniteError extends TrainerError {}
