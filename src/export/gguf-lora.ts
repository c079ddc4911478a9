import { ExportError } from '../errors.js';
import type { Qwen3Config } from '../model/config.js';
import { GGUF_PROJECTION_NAMES } from './gguf-model.js';
import { quantizeRows } from './gguf-quants.js';
import { gguf, GgufWriter, type GgufTensorDecl, type GgufValue } from './gguf-writer.js';
import type { HostLoraAdapter } from '../model/peft.js';

/**
 * A LoRA adapter as a GGUF for llama.cpp's `--lora` (and Ollama's ADAPTER, which works for qwen3
 * only from Ollama 0.30): general.type "adapter", adapter.type "lora", adapter.lora.alpha (F32);
 * per layer and targeted projection `blk.{i}.<name>.weight.lora_a` with ne [K, R] (PEFT's lora_A
 * (R, K) bytes unchanged) and `.lora_b` with ne [R, Nout] (lora_B (Nout, R) unchanged), in F32.
 *
 * llama.cpp scales by alpha / R with R = ne[0] of lora_b; for rsLoRA (scale alpha/√r) the file
 * stores alpha·√r so that the applied scale is the trained one.
 */

export interface LoraGgufOptions {
  /** general.name */
  readonly name: string;
}

function plan(model: Qwen3Config, adapter: HostLoraAdapter): { tensors: GgufTensorDecl[]; data: Float32Array[] } {
  const tensors: GgufTensorDecl[] = [];
  const data: Float32Array[] = [];
  const r = adapter.config.r;
  adapter.layers.forEach((entry, l) => {
    for (const p of adapter.config.targetModules) {
      const pair = entry[p];
      if (!pair) throw new ExportError(`LoRA GGUF: layer ${l} has no ${p} factors but the adapter targets ${p}`);
      const [nOut, k] = adapter.shapes[p];
      const base = `blk.${l}.${GGUF_PROJECTION_NAMES[p]}.weight`;
      tensors.push({ name: `${base}.lora_a`, ne: [k, r], type: 'F32' }, { name: `${base}.lora_b`, ne: [r, nOut], type: 'F32' });
      data.push(pair.a, pair.b);
    }
  });
  if (adapter.layers.length !== model.numHiddenLayers) {
    throw new ExportError(`LoRA GGUF: the adapter has ${adapter.layers.length} layers, the model ${model.numHiddenLayers}`);
  }
  return { tensors, data };
}

function metadata(adapter: HostLoraAdapter, options: LoraGgufOptions): [string, GgufValue][] {
  // llama.cpp applies alpha / r; alpha' = scale · r reproduces any scale (alpha/r or alpha/√r).
  const alpha = adapter.scale * adapter.config.r;
  return [
    ['general.architecture', gguf.str('qwen3')],
    ['general.type', gguf.str('adapter')],
    ['general.name', gguf.str(options.name)],
    ['adapter.type', gguf.str('lora')],
    ['adapter.lora.alpha', gguf.f32(alpha)],
  ];
}

export function loraGgufBytes(model: Qwen3Config, adapter: HostLoraAdapter, options: LoraGgufOptions): number {
  return GgufWriter.plannedBytes(metadata(adapter, options), plan(model, adapter).tensors);
}

/** Writes the adapter GGUF at `path` (temporary name, renamed when complete). */
export async function writeLoraGguf(path: string, model: Qwen3Config, adapter: HostLoraAdapter, options: LoraGgufOptions): Promise<void> {
  const { tensors, data } = plan(model, adapter);
  const writer = await GgufWriter.create(path, metadata(adapter, options), tensors);
  try {
    for (let i = 0; i < tensors.length; i++) await writer.write(tensors[i].name, quantizeRows('F32', data[i], tensors[i].ne[0]));
    await writer.finish();
  } finally {
    await writer.abort();
  }
}
