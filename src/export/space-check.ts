import type { TrainConfig } from '../config/schema.js';
import { PROJECTIONS, projectionShape } from '../model/checkpoint.js';
import { checkFreeSpace } from './export-command.js';
import { planQwen3Tensors, type GgufFileType } from './gguf-model.js';
import { rowBytes } from './gguf-quants.js';
import { MergedWeights } from './merge.js';

/**
 * What a run's configured export will write, counted before training (so a full disk is found
 * before hours of training, not after): the merged GGUF by its quant type, the base GGUF and LoRA
 * GGUF with export_lora_gguf, the merged folder with export_merged, and the adapter. Tensor data
 * only: the GGUF headers (tokenizer, metadata) are covered by checkFreeSpace's margin.
 */
export async function plannedExportBytes(modelDir: string, config: TrainConfig): Promise<number> {
  const wantsGguf = config.export_gguf !== null || config.export_lora_gguf;
  if (!wantsGguf && !config.export_merged) return 0;
  const weights = await MergedWeights.open(modelDir, undefined, { base: 'original' });
  try {
    const c = weights.config;
    const gguf = (type: GgufFileType): number =>
      planQwen3Tensors(c, type, (s) => weights.info(s).shape).reduce((a, t) => a + rowBytes(t.type, t.ne[0], t.name) * t.ne.slice(1).reduce((x, d) => x * d, 1), 0);
    let bytes = 0;
    if (config.export_gguf !== null) bytes += gguf(config.export_gguf);
    if (config.export_lora_gguf) {
      bytes += gguf(config.export_gguf ?? 'f16');
      const targets = PROJECTIONS.filter((p) => config.lora_target_modules.includes(p));
      bytes += c.numHiddenLayers * targets.reduce((a, p) => a + 4 * config.lora_r * projectionShape(c, p).reduce((x, d) => x + d, 0), 0);
    }
    if (config.export_merged) {
      bytes += weights.names().reduce((a, n) => {
        const info = weights.info(n);
        return a + (info.dtype === 'F32' ? 4 : 2) * info.shape.reduce((x, d) => x * d, 1);
      }, 0);
    }
    return bytes;
  } finally {
    await weights.close();
  }
}

/** Refuses to start training when the configured export will not fit on the output disk. */
export async function checkExportSpace(outputDir: string, modelDir: string, config: TrainConfig): Promise<void> {
  await checkFreeSpace(outputDir, await plannedExportBytes(modelDir, config));
}
