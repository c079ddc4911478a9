import { loadLoraAdapter } from '../../src/model/lora.js';
import { Qwen3Model } from '../../src/model/qwen3.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { Trainer } from '../../src/train/trainer.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from './fixtures.js';
import { testGpu } from './gpu.js';

type Reference = Awaited<ReturnType<typeof readReference>>;

/** The fixture's training batch (reference.safetensors: input_ids, labels), one example per row. */
export function referenceBatch(ref: Reference): { B: number; T: number; inputIds: Int32Array; labels: Int32Array; positionIds: Int32Array; segmentIds: Int32Array } {
  const [B, T] = ref.get('input_ids')!.shape;
  return {
    B,
    T,
    inputIds: ref.get('input_ids')!.i32!,
    labels: ref.get('labels')!.i32!,
    positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
    segmentIds: new Int32Array(B * T),
  };
}

/**
 * One micro-batch of the tiny fixture model with the fixture's PEFT adapter (AdamW, max_grad_norm 1):
 * its mean token loss, every LoRA gradient by PEFT key, and the names of the step's planned buffers.
 */
export async function tinyGradients(
  ref: Reference,
  o: { readonly base: 'full' | 'nf4'; readonly recompute: RecomputePolicy; readonly savedF16?: boolean },
): Promise<{ loss: number; grads: Map<string, Float32Array>; planned: string[] }> {
  const gpu = await testGpu();
  const batch = referenceBatch(ref);
  const model = await Qwen3Model.load(gpu, TINY_MODEL, { base: o.base });
  const adapter = await loadLoraAdapter(gpu, TINY_ADAPTER, model.config);
  const trainer = await Trainer.create(gpu, model, adapter, {
    B: batch.B,
    T: batch.T,
    checkpointing: o.recompute !== 'none',
    recompute: o.recompute,
    optimizer: { kind: 'adamw' },
    hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
    maxGradNorm: 1,
    savedF16: o.savedF16,
  });
  const targets = trainer.accumulate({ ...batch, examples: [], targets: 0 });
  const loss = (await trainer.readLossSum()) / targets;
  const grads = await trainer.readGradients();
  const planned = trainer.program.plan.map((b) => b.name);
  trainer.destroy();
  return { loss, grads, planned };
}
