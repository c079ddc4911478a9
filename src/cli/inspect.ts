import { parseArgs } from 'node:util';
import { ConfigError, ShapeError } from '../errors.js';
import { Gpu } from '../kernels/gpu.js';
import { PROJECTIONS } from '../model/checkpoint.js';
import { loadLoraAdapter, peftKey, type LoraAdapter } from '../model/lora.js';
import { Trainer } from '../train/trainer.js';
import { Qwen3Model } from '../model/qwen3.js';
import { SafetensorsFile } from '../model/safetensors.js';
import { SafetensorsWriter, type SafetensorsEntry } from '../model/safetensors-writer.js';

export const INSPECT_USAGE = `usage: prompt-lora inspect --model DIR [--adapter DIR] [--base nf4|full] [--double-quant]
                         --batch IN.safetensors --out OUT.safetensors [--grads]

Runs the forward pass on a batch and writes what other implementations can be compared with.
  --model DIR        Hugging Face Qwen3 folder (config.json + safetensors)
  --adapter DIR      PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)
  --base nf4|full    quantise the projections to NF4 (default) or keep the checkpoint's precision
  --double-quant     NF4 with 8-bit double-quantised block scales
  --batch FILE       input_ids and labels (I32 [B, T]); optional position_ids, segment_ids (I32 [B, T])
  --out FILE         writes loss (F32 [1]), logits_last (F32 [B, V]), layer_out.{i} (F32 [B, T, D])
  --grads            also grad.<PEFT key> (F32) for every LoRA tensor: the gradient of the mean loss
                     (needs --adapter), computed by the training step (checkpointing on)`;

/** Reads an I32 [B, T] tensor of the batch file, or undefined when absent and optional. */
async function readI32(file: SafetensorsFile, name: string, shape: readonly number[] | undefined, required: boolean): Promise<Int32Array | undefined> {
  const info = file.tensors.get(name);
  if (!info) {
    if (required) throw new ShapeError(`${file.path}: missing tensor "${name}" (I32 [B, T])`);
    return undefined;
  }
  if (info.dtype !== 'I32') throw new ShapeError(`${file.path}: ${name} has dtype ${info.dtype}, expected I32`);
  if (info.shape.length !== 2 || (shape && (info.shape[0] !== shape[0] || info.shape[1] !== shape[1]))) {
    throw new ShapeError(`${file.path}: ${name} has shape [${info.shape.join(', ')}], expected ${shape ? `[${shape.join(', ')}]` : '[B, T]'}`);
  }
  const bytes = await file.readBytes(name);
  return new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** Shape of the LoRA tensor named by a PEFT key ([R, K] for lora_A, [Nout, R] for lora_B). */
function gradShape(adapter: LoraAdapter, key: string): number[] {
  for (const [l, entry] of adapter.layers.entries()) {
    for (const p of PROJECTIONS) {
      const pair = entry[p];
      if (!pair) continue;
      if (key === peftKey(l, p, 'A')) return [...pair.a.shape];
      if (key === peftKey(l, p, 'B')) return [...pair.b.shape];
    }
  }
  throw new ShapeError(`inspect: no LoRA tensor named ${key}`);
}

export async function runInspect(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      adapter: { type: 'string' },
      base: { type: 'string', default: 'nf4' },
      'double-quant': { type: 'boolean', default: false },
      grads: { type: 'boolean', default: false },
      batch: { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(INSPECT_USAGE);
    return 0;
  }
  if (!values.model || !values.batch || !values.out) throw new ConfigError(`inspect needs --model, --batch and --out\n\n${INSPECT_USAGE}`);
  if (values.base !== 'nf4' && values.base !== 'full') throw new ConfigError(`--base must be nf4 or full, got "${values.base}"`);
  if (values.grads && !values.adapter) throw new ConfigError('--grads needs --adapter (the gradients are those of the LoRA tensors)');

  const batchFile = await SafetensorsFile.open(values.batch);
  let inputIds: Int32Array, labels: Int32Array, positionIds: Int32Array | undefined, segmentIds: Int32Array | undefined;
  let B: number, T: number;
  try {
    inputIds = (await readI32(batchFile, 'input_ids', undefined, true))!;
    [B, T] = batchFile.tensors.get('input_ids')!.shape;
    labels = (await readI32(batchFile, 'labels', [B, T], true))!;
    positionIds = await readI32(batchFile, 'position_ids', [B, T], false);
    segmentIds = await readI32(batchFile, 'segment_ids', [B, T], false);
  } finally {
    await batchFile.close();
  }

  const gpu = await Gpu.open();
  try {
    const model = await Qwen3Model.load(gpu, values.model, { base: values.base, doubleQuant: values['double-quant'] });
    const adapter = values.adapter ? await loadLoraAdapter(gpu, values.adapter, model.config) : undefined;
    const result = await model.forward({ B, T, inputIds, labels, positionIds, segmentIds }, { adapter, logitsLast: true, captureLayers: true });
    const V = model.config.vocabSize;
    const D = model.config.hiddenSize;
    let grads = new Map<string, Float32Array>();
    if (values.grads && adapter) {
      const trainer = await Trainer.create(gpu, model, adapter, {
        B,
        T,
        checkpointing: true,
        optimizer: { kind: 'adamw' },
        hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
        maxGradNorm: 0,
      });
      trainer.accumulate({ inputIds, labels, positionIds: positionIds ?? Int32Array.from({ length: B * T }, (_, i) => i % T), segmentIds: segmentIds ?? new Int32Array(B * T) });
      grads = await trainer.readGradients();
      trainer.destroy();
    }
    const entries: SafetensorsEntry[] = [
      { name: 'loss', dtype: 'F32', shape: [1] },
      { name: 'logits_last', dtype: 'F32', shape: [B, V] },
      ...result.layerOut!.map((_, i) => ({ name: `layer_out.${i}`, dtype: 'F32' as const, shape: [B, T, D] })),
      ...[...grads.keys()].map((key) => ({ name: `grad.${key}`, dtype: 'F32' as const, shape: gradShape(adapter!, key) })),
    ];
    const writer = await SafetensorsWriter.create(values.out, entries, { producer: 'prompt-lora inspect', base: values.base });
    try {
      await writer.write('loss', new Float32Array([result.loss]));
      await writer.write('logits_last', result.logitsLast!);
      for (let i = 0; i < result.layerOut!.length; i++) await writer.write(`layer_out.${i}`, result.layerOut![i]);
      for (const [key, g] of grads) await writer.write(`grad.${key}`, g);
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    console.log(`inspect: B=${B} T=${T} base=${values.base}${adapter ? ' + adapter' : ''}: loss ${result.loss.toFixed(6)} over ${result.targets} targets → ${values.out}`);
    return 0;
  } finally {
    gpu.destroy();
  }
}
