import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Structural check: the Qwen3 layer is written once (src/model/decoder-layer.ts). The training
 * step, the evaluation forward and generation's chunk program import it and encode no layer
 * kernel (attention, rmsnorm of a layer, rope, swiglu, projections) themselves.
 */
const src = (p: string): string => readFileSync(join(import.meta.dirname, '../../src', p), 'utf8');
/** The code without its comments (the doc comments describe the layer). */
const code = (p: string): string => src(p).replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
const CALLERS = ['train/step.ts', 'model/forward.ts', 'generate/chunk-program.ts'];

describe('one decoder layer implementation', () => {
  it.each(CALLERS)('%s encodes its layers through decoder-layer.ts', (file) => {
    const text = code(file);
    expect(text).toMatch(/from '\.\.\/model\/decoder-layer\.js'|from '\.\/decoder-layer\.js'/);
    expect(text).toMatch(/\blayerForward\(list,/);
    for (const direct of [/\.attention\.forward\(/, /\.attentionBackward\./, /\.swiglu\./, /\.rope\.(forward|backward)\(/, /writeKv\(/, /input_layernorm|post_attention_layernorm|q_norm|k_norm/, /lora_A/]) {
      expect(text, `${file} must not encode ${direct} itself`).not.toMatch(direct);
    }
  });

  it('decoder-layer.ts holds the layer: forward and backward side by side, with its Saved type', () => {
    const text = src('model/decoder-layer.ts');
    for (const part of ['export interface Saved', 'export function layerForward', 'export function layerBackward', "kind: 'kv-cache'", "kind: 'packed'"]) expect(text).toContain(part);
    const proj = src('model/projection.ts');
    for (const part of ['export function projectionForward', 'export function projectionBackward']) expect(proj).toContain(part);
  });
});
