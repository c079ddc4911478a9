import { describe, expect, it } from 'vitest';
import { ProgressObserver, type ProgressStream } from '../../src/report/progress-observer.js';
import { renderProgressBar } from '../../src/report/progress-bar.js';
import { formatBytes, formatDuration, formatExp } from '../../src/report/format-units.js';
import { formatEndLine, formatEvalLine, formatStepLine } from '../../src/report/log-lines.js';
import { evalRecord, runStart, sample, stepRecord } from './records.js';

/** A stream that records what was written, with a settable terminal flag and width. */
class FakeStream implements ProgressStream {
  text = '';
  constructor(
    readonly isTTY: boolean,
    public columns?: number,
  ) {}
  write(chunk: string): boolean {
    this.text += chunk;
    return true;
  }
}

const CLEAR = '\r\x1b[2K';

/** What a terminal would show: apply \r + "erase line" and \n to a screen of lines. */
function screen(text: string): string[] {
  const lines = [''];
  for (const piece of text.split(/(\r\x1b\[2K|\n)/)) {
    if (piece === CLEAR) lines[lines.length - 1] = '';
    else if (piece === '\n') lines.push('');
    else lines[lines.length - 1] += piece;
  }
  return lines;
}

describe('number formats', () => {
  it('matches the forms the issue and Python print', () => {
    expect(formatExp(1.98e-4)).toBe('1.98e-04'); // Python: '%.2e' % 1.98e-4
    expect(formatExp(2e-3)).toBe('2.00e-03');
    expect(formatExp(0)).toBe('0.00e+00');
    expect(formatExp(12345)).toBe('1.23e+04');
    expect(formatDuration(192)).toBe('3m12s');
    expect(formatDuration(45.4)).toBe('45s');
    expect(formatDuration(3600 + 2 * 60 + 59)).toBe('1h02m');
    expect(formatDuration(2 * 86400 + 3 * 3600)).toBe('2d03h');
    expect(formatDuration(NaN)).toBe('?');
    expect(formatBytes(5.7 * 1024 ** 3)).toBe('5.7 GiB');
    expect(formatBytes(812 * 1024 ** 2)).toBe('812 MiB');
  });
});

describe('log lines', () => {
  it('writes the step line in the layout of the issue', () => {
    const r = stepRecord(20, { epoch: 0.4, loss: 1.2345, learningRate: 1.98e-4, gradNorm: 0.812, tokenAccuracy: 0.61, tokensPerSecond: 1234, etaSeconds: 192 });
    expect(formatStepLine(r)).toBe('step 20/200 epoch 0.40: loss 1.2345, lr 1.98e-04, grad_norm 0.812, token_acc 0.61, 1234 tokens/s, eta 3m12s');
    expect(formatStepLine({ ...r, tokenAccuracy: undefined })).not.toContain('token_acc');
  });

  it('says whether an evaluation is the best and how long since the last improvement', () => {
    expect(formatEvalLine(evalRecord(40, 1.2345))).toBe('step 40: eval_loss 1.2345 (best)');
    const worse = formatEvalLine(evalRecord(60, 1.3, { isBest: false, bestStep: 40, bestEvalLoss: 1.2345, badEvaluations: 2 }));
    expect(worse).toBe('step 60: eval_loss 1.3000 (best 1.2345 at step 40; 2 evaluations without improvement)');
  });

  it('ends with the reason, the time and the best evaluation', () => {
    expect(formatEndLine({ steps: 200, reason: 'completed', bestStep: 180, bestEvalLoss: 1.1, elapsedSeconds: 723 })).toBe('done: 200 steps in 12m03s; best eval_loss 1.1000 at step 180');
    expect(formatEndLine({ steps: 57, reason: 'failed', elapsedSeconds: 10, message: 'non-finite loss' })).toBe('failed at step 57 after 10s: non-finite loss');
    expect(formatEndLine({ steps: 57, reason: 'interrupted', elapsedSeconds: 10, lastCheckpoint: 'out/checkpoint-57' })).toBe('interrupted at step 57 after 10s; last checkpoint out/checkpoint-57');
    expect(formatEndLine({ steps: 57, reason: 'failed', elapsedSeconds: 10, message: 'NaN; last good checkpoint out/c-50', lastCheckpoint: 'out/c-50' })).toBe('failed at step 57 after 10s: NaN; last good checkpoint out/c-50');
  });
});

describe('progress bar', () => {
  it('fits every width from 20 to 240 columns and keeps the step count', () => {
    const view = { step: 20, totalSteps: 200, record: stepRecord(20) };
    for (let columns = 20; columns <= 240; columns += 7) {
      const line = renderProgressBar(view, columns);
      expect(line.length, `columns ${columns}: "${line}"`).toBeLessThanOrEqual(columns - 1);
      expect(line.startsWith('step 20/200'), line).toBe(true);
    }
  });

  it('shows every field when wide and drops the least important first when narrow', () => {
    const r = stepRecord(100);
    const wide = renderProgressBar({ step: 100, totalSteps: 200, record: r }, 200);
    for (const part of ['50%', 'epoch 2.00', 'loss ', 'lr 1.00e-04', '1234 tok/s', 'eta 2m30s', '2m30s']) expect(wide).toContain(part);
    const narrow = renderProgressBar({ step: 100, totalSteps: 200, record: r }, 60);
    expect(narrow).toContain('loss ');
    expect(narrow).not.toContain('lr ');
    // The bar is proportional: half of its cells filled at step 100 of 200.
    const cells = /\[(█*)(░*)\]/.exec(wide)!;
    expect(Math.abs(cells[1].length - cells[2].length)).toBeLessThanOrEqual(1);
  });
});

describe('ProgressObserver', () => {
  const run = (stream: FakeStream): ProgressObserver => {
    const p = new ProgressObserver(stream);
    p.onStart(runStart());
    p.message('model: loaded in 2.8 s');
    p.onStep(stepRecord(10));
    p.onStep(stepRecord(20, { loss: 1.2345 }));
    p.onEvalStart(20);
    p.onEval(evalRecord(20, 1.5));
    p.onSamplesStart(20);
    p.onSamples([sample(20, 'a', 'b'), sample(20, 'c', 'd')]);
    p.onStep(stepRecord(30));
    p.onEnd({ steps: 30, reason: 'early_stopping', bestStep: 20, bestEvalLoss: 1.5, elapsedSeconds: 45 });
    return p;
  };

  it('writes plain lines, no control characters, when the stream is not a terminal', () => {
    const out = new FakeStream(false);
    run(out);
    expect(out.text).not.toMatch(/[\r\x1b]/);
    expect(out.text.split('\n')).toEqual([
      'model: loaded in 2.8 s',
      formatStepLine(stepRecord(10)),
      formatStepLine(stepRecord(20, { loss: 1.2345 })),
      'eval: evaluating at step 20…',
      'step 20: eval_loss 1.5000 (best)',
      'samples: generating at step 20…',
      'samples: 2 generated at step 20 (shown in report.html)',
      formatStepLine(stepRecord(30)),
      'early stopping after 30 steps (45s); best eval_loss 1.5000 at step 20',
      '',
    ]);
  });

  it('redraws one bar in place on a terminal, with messages and each logged step kept above it', () => {
    const out = new FakeStream(true, 100);
    run(out);
    const lines = screen(out.text);
    // Messages, step lines, eval and sample lines each on their own line (the scroll-back), then the
    // last bar kept, then the end line.
    expect(lines).toEqual([
      'model: loaded in 2.8 s',
      formatStepLine(stepRecord(10)),
      formatStepLine(stepRecord(20, { loss: 1.2345 })),
      'eval: evaluating at step 20…',
      'step 20: eval_loss 1.5000 (best)',
      'samples: generating at step 20…',
      'samples: 2 generated at step 20 (shown in report.html)',
      formatStepLine(stepRecord(30)),
      renderProgressBar({ step: 30, totalSteps: 200, record: stepRecord(30) }, 100),
      'early stopping after 30 steps (45s); best eval_loss 1.5000 at step 20',
      '',
    ]);
    // Every redraw starts by clearing the line: one bar per logged step plus the start bar.
    expect(out.text.split(CLEAR).length - 1).toBeGreaterThanOrEqual(4);
    // The intermediate bar of step 20 was drawn (then overwritten).
    expect(out.text).toContain(renderProgressBar({ step: 20, totalSteps: 200, record: stepRecord(20, { loss: 1.2345 }) }, 100));
  });

  it('leaves a failed run\'s error out of its end line (the caller prints it once, on stderr)', () => {
    for (const tty of [false, true]) {
      const out = new FakeStream(tty, 100);
      const p = new ProgressObserver(out);
      p.onStart(runStart());
      p.onStep(stepRecord(10));
      const message = 'no space left on device while writing out/checkpoint-4/optimizer.safetensors';
      p.onEnd({ steps: 12, reason: 'failed', elapsedSeconds: 10, message, lastCheckpoint: 'out/checkpoint-2' });
      expect(out.text).not.toContain('no space left');
      expect(screen(out.text).at(-2)).toBe('failed at step 12 after 10s; last checkpoint out/checkpoint-2');
    }
  });

  it('says nothing was run when a resumed run had already finished', () => {
    const out = new FakeStream(false);
    const p = new ProgressObserver(out);
    p.onStart(runStart({ startStep: 200 }));
    p.onEnd({ steps: 200, reason: 'completed', elapsedSeconds: 1 });
    expect(out.text).toBe('nothing to do: the run had already finished at step 200 (0 steps run)\n');
    // A resume that ran steps still ends with "done".
    const ran = new FakeStream(false);
    const q = new ProgressObserver(ran);
    q.onStart(runStart({ startStep: 100 }));
    q.onEnd({ steps: 200, reason: 'completed', elapsedSeconds: 1 });
    expect(ran.text).toBe('done: 200 steps in 1s\n');
  });

  it('follows the terminal width at each redraw', () => {
    const out = new FakeStream(true, 120);
    const p = new ProgressObserver(out);
    p.onStart(runStart());
    p.onStep(stepRecord(10));
    out.columns = 50;
    out.text = '';
    p.onStep(stepRecord(20));
    // The step's line (kept), then the bar redrawn at the new width.
    expect(out.text.startsWith(`${CLEAR}${formatStepLine(stepRecord(20))}\n`)).toBe(true);
    const drawn = out.text.slice(`${CLEAR}${formatStepLine(stepRecord(20))}\n`.length);
    expect(drawn.length).toBeLessThanOrEqual(49);
    expect(drawn).toBe(renderProgressBar({ step: 20, totalSteps: 200, record: stepRecord(20) }, 50));
  });
});
