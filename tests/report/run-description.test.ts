import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseQwen3Config } from '../../src/model/config.js';
import { planCheckpointing } from '../../src/report/run-context.js';
import { planStep } from '../../src/train/plan.js';
import type { RecomputePolicy } from '../../src/train/recompute.js';
import { resolveConfig } from '../../src/config/load.js';
import { embeddedNotice, realFineTuneCommand } from '../../src/report/embedded-notice.js';
import { renderReportHtml } from '../../src/report/report-html.js';
import { describeRun } from '../../src/report/run-description.js';
import { RunHistory } from '../../src/report/run-history.js';
import { formatStartBlock, StartBlockObserver } from '../../src/report/start-block.js';
import { evalRecord, runStart, stepRecord } from './records.js';

const config = resolveConfig({ model_id: 'Qwen/Qwen3-4B-Instruct-2507', dataset_id: './rows.jsonl', lora_r: 32, lora_alpha: 64, learning_rate: 2e-4 }, 'c.yaml').config;
const description = (embedded = false) =>
  describeRun({ config, device: 'test GPU [shader-f16]', computePath: 'tiled f32 WGSL matmuls; loss head chunked', checkpointing: 'layers 0..17 of 36', memoryPlan: '5.70 GiB planned', embedded });

describe('start-of-run block', () => {
  it('prints the effective batch in tokens per optimiser step, steps per epoch, total steps and the compute path', () => {
    const lines: string[] = [];
    new StartBlockObserver(description(), (l) => lines.push(l)).onStart(runStart({ batch: 4, seqLength: 512, gradientAccumulation: 4, stepsPerEpoch: 37, totalSteps: 111 }));
    expect(lines).toHaveLength(1);
    const block = lines[0];
    expect(block).toMatch(/^── run ─+\n/);
    expect(block).toMatch(/effective batch +4 × 512 tokens × 4 accumulation = 8192 tokens per optimiser step/);
    expect(block).toMatch(/steps +37 per epoch, 111 total, 10 warm-up/);
    expect(block).toMatch(/compute path +tiled f32 WGSL matmuls; loss head chunked/);
    expect(block).toMatch(/LoRA +r=32, alpha=64, dropout [\d.]+, targets q_proj/);
    expect(block).toMatch(/model +Qwen\/Qwen3-4B-Instruct-2507\n/);
    expect(block).toMatch(/device +test GPU/);
    expect(block).toMatch(/memory plan +5\.70 GiB planned/);
    expect(block).toMatch(/gradient checkpointing layers 0\.\.17 of 36/);
  });

  it('names the recomputed layers as the plan has them (true, false, k, {checkpoint_layers: k})', () => {
    const model = parseQwen3Config(JSON.parse(readFileSync('configs/models/qwen3-4b.json', 'utf8')), 'qwen3-4b.json');
    const plan = (gradientCheckpointing: boolean, recompute?: RecomputePolicy) =>
      planStep(model, { batch: 1, seq: 64, r: 8, targets: ['q_proj'], gradientCheckpointing, optimizer: 'adamw', base: 'nf4', doubleQuant: false, lossChunkTokens: 64, loraDropout: 0, ...(recompute ? { recompute } : {}) });
    expect(planCheckpointing(plan(true))).toBe('on');
    expect(planCheckpointing(plan(false))).toBe('off');
    expect(planCheckpointing(plan(true, { checkpointLayers: 18 }))).toBe('layers 0..17 of 36');
    expect(planCheckpointing(plan(true, { checkpointLayers: 0 }))).toBe('off');
  });
});

describe('report.html explains the run', () => {
  const history = (): RunHistory => {
    const h = new RunHistory(runStart());
    for (let s = 1; s <= 100; s++) h.steps.push(stepRecord(s, { loss: s <= 50 ? 2 : 1 }));
    h.evals.push(evalRecord(50, 1.75, { isBest: true }), evalRecord(100, 1.25, { isBest: true }));
    return h;
  };

  it('shows the resolved hyperparameters and eval loss next to the mean train loss per evaluation', () => {
    const html = renderReportHtml(history(), '2026-12-02T12:00:00Z', description());
    const run = html.slice(html.indexOf('id="run-table"'), html.indexOf('</table>', html.indexOf('id="run-table"')));
    for (const row of formatStartBlock(description(), runStart()).split('\n').slice(1, -1)) {
      const key = row.split(/ {2,}/)[0];
      expect(run, key).toContain(`<td>${key}</td>`);
    }
    expect(run).toContain('8 × 192 tokens × 2 accumulation = 3072 tokens per optimiser step');
    const evals = html.slice(html.indexOf('id="eval-table"'));
    // steps 1..50 have loss 2, steps 51..100 loss 1: each evaluation's row has the mean of its own steps
    expect(evals).toMatch(/<tr><td>50<\/td><td>1\.00<\/td><td>2\.0000<\/td><td>1\.7500<\/td>/);
    expect(evals).toMatch(/<tr><td>100<\/td><td>2\.00<\/td><td>1\.0000<\/td><td>1\.2500<\/td>/);
    expect(html).not.toContain('embedded-notice');
  });

  it('says plainly on the embedded model that the samples are noise by design, and what to run instead', () => {
    const html = renderReportHtml(history(), '2026-12-02T12:00:00Z', description(true));
    expect(html).toContain('id="embedded-notice"');
    expect(html).toMatch(/random weights: its sample generations are noise by design/);
    expect(html).toContain(realFineTuneCommand());
    expect(embeddedNotice().join('\n')).toContain('configs/qwen3-4b-deforum-v7.yaml');
  });
});
