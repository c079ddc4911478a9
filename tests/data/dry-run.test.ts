import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDryRun, type DryRunBatchShape } from '../../src/cli/dry-run.js';
import { resolveConfig } from '../../src/config/load.js';
import { bundledDatasetDir } from '../../src/config/paths.js';

const env = { HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent-hf-home' };

describe('--dry-run', () => {
  it('shows a rendered example with its loss mask, token counts, steps and the memory-plan hook, without weights', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dry-'));
    const rows = readFileSync(join(bundledDatasetDir(), 'train.jsonl'), 'utf8').trim().split('\n').slice(0, 40);
    writeFileSync(join(dir, 'train.jsonl'), rows.join('\n') + '\n');
    const config = resolveConfig({ dataset_id: dir, per_device_train_batch_size: 2, gradient_accumulation_steps: 4, num_train_epochs: 2, max_seq_length: 384 }, 'test').config;
    let out = '';
    let asked: DryRunBatchShape | undefined;
    const s = await runDryRun(config, {
      env,
      out: (t) => (out += t + '\n'),
      memoryPlan: (_c, shape) => {
        asked = shape;
        return 'memory      (plan table)';
      },
      warnings: ['optim paged_adamw_8bit: runs as AdamW'],
    });
    expect(s.train.examples).toBe(36); // 40 rows, 10% (4) held out for eval
    expect(s.eval.examples).toBe(4);
    expect(s.batchesPerEpoch).toBe(18);
    expect(s.stepsPerEpoch).toBe(5); // ceil(18 / 4)
    expect(s.totalSteps).toBe(10);
    expect(s.example.trainedTokens).toBeGreaterThan(40);
    expect(s.example.maskView).toMatch(/<\|im_start\|>user\nGenerate a cinematic video prompt for: [^\n]+<\|im_end\|>\n<\|im_start\|>assistant\n<think>\n\n<\/think>\n\n⟦[^⟧]+<\|im_end\|>⟧\n$/);
    expect(asked).toEqual({ B: 2, T: s.batchShape.T });
    expect(s.batchShape.T % 8).toBe(0);
    expect(out).toMatch(/^warning: optim paged_adamw_8bit/);
    expect(out).toMatch(/steps {7}5 per epoch \(gradient_accumulation_steps 4\), 10 in all \(2 epochs\)/);
    expect(out).toMatch(/memory {6}\(plan table\)/);

    const packed = await runDryRun({ ...config, packing: true }, { env, out: () => {} });
    expect(packed.rowsPerEpoch).toBeLessThan(36);
    expect(packed.batchShape.T).toBe(384);
    expect(packed.memoryPlan).toBeUndefined();
  });
});
