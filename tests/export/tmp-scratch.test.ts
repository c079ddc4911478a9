import { it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama } from 'node-llama-cpp';
import { Checkpoint } from '../../src/model/checkpoint.js';
import { readPeftAdapter } from '../../src/export/peft.js';
import { MergedWeights } from '../../src/export/merge.js';
import { writeQwen3Gguf } from '../../src/export/gguf-model.js';
import { readGgufTokenizer } from '../../src/export/gguf-tokenizer.js';
import { tokenizerSourceDir } from '../../src/export/tokenizer-files.js';
import { QwenTokenizer } from '../../src/model/tokenizer.js';
import { readReference, TINY_ADAPTER, TINY_MODEL } from '../helpers/fixtures.js';

it('scratch', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gguf-'));
  const ck = await Checkpoint.open(TINY_MODEL); const config = ck.config; await ck.close();
  const adapter = await readPeftAdapter(TINY_ADAPTER, config);
  const w = await MergedWeights.open(TINY_MODEL, adapter);
  const tdir = tokenizerSourceDir(TINY_MODEL);
  const qt = await QwenTokenizer.load(TINY_MODEL);
  const tok = await readGgufTokenizer(tdir, config, qt.chatTemplate);
  let t0 = Date.now();
  await writeQwen3Gguf('/tmp/m.gguf', w, { fileType: 'f32', name: 'tiny', tokenizer: tok }); await writeQwen3Gguf(join(dir, 'm.gguf'), w, { fileType: 'f32', name: 'tiny', tokenizer: tok });
  console.log('write', Date.now() - t0); t0 = Date.now();
  const llama = await getLlama({ gpu: false, build: 'never' });
  const model = await llama.loadModel({ modelPath: join(dir, 'm.gguf') });
  console.log('load', Date.now() - t0); t0 = Date.now();
  const ctx = await model.createContext({ contextSize: 64, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', threads: 2, flashAttention: process.env.FA === '1' });
  const seq = ctx.getSequence();
  const ref = await readReference();
  const ids = ref.get('input_ids')!.i32!;
  const logits = ref.get('lora_bf16.logits_last')!.data;
  const V = 151936;
  for (let b = 0; b < 2; b++) {
    const toks = Array.from(ids.slice(b * 24, b * 24 + 24));
    const input: any[] = toks.map((t, i) => (i === 23 ? [t, { generateNext: { probabilities: true } }] : t));
    const res = await seq.controlledEvaluate(input);
    const probs = res[23]!.next.probabilities!;
    let m = -Infinity; for (let i = 0; i < V; i++) m = Math.max(m, logits[b * V + i]);
    let s = 0; for (let i = 0; i < V; i++) s += Math.exp(logits[b * V + i] - m);
    let num = 0, den = 0;
    for (let i = 0; i < V; i++) { const p = Math.exp(logits[b * V + i] - m) / s; const q = probs.get(i) ?? 0; num += (p - q) ** 2; den += p * p; }
    console.log('row', b, 'rel', Math.sqrt(num / den), probs.size);
    let qs = 0; for (let i = 0; i < V; i++) qs += probs.get(i) ?? 0;
    let n2 = 0, d2 = 0, maxd = 0;
    const lq = new Float64Array(V), lp = new Float64Array(V); let mq = 0, mp = 0;
    for (let i = 0; i < V; i++) { const p = Math.exp(logits[b * V + i] - m) / s; const q = (probs.get(i) ?? 0) / qs; n2 += (p - q) ** 2; d2 += p * p; lq[i] = Math.log(probs.get(i)!); lp[i] = logits[b*V+i]; mq += lq[i]; mp += lp[i]; }
    mq /= V; mp /= V; for (let i = 0; i < V; i++) maxd = Math.max(maxd, Math.abs((lq[i]-mq) - (lp[i]-mp)));
    console.log('renorm rel', Math.sqrt(n2 / d2), 'sum q', qs, 'max centered logit diff', maxd);
    await seq.clearHistory();
  }
  console.log('eval', Date.now() - t0);
  console.log(model.tokenize('Hello <|im_start|>user\n<think>x</think> wörld', true), qt.encode('Hello <|im_start|>user\n<think>x</think> wörld'));
  await ctx.dispose(); await model.dispose(); await llama.dispose();
});
