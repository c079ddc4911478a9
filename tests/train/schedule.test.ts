import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { LrSchedule, warmupStepsFor, type ScheduleConfig } from '../../src/train/schedule.js';

/**
 * Expected values are worked out by hand from transformers' lr_lambda formulas (see schedule.ts);
 * `lrAt(k)` is the rate of the update after k optimiser steps (LambdaLR's λ(k)).
 */
const LR = 2e-4;
const base = { learningRate: LR, totalSteps: 100, warmupSteps: 10 } as const;
const sched = (c: Partial<ScheduleConfig> & Pick<ScheduleConfig, 'type'>): LrSchedule => new LrSchedule({ ...base, ...c });

describe('warmup steps (TrainingArguments.get_warmup_steps)', () => {
  it('takes warmup_steps when ≥ 1, else ceil(total · ratio) in float64', () => {
    expect(warmupStepsFor(100, 5, 0.5)).toBe(5);
    expect(warmupStepsFor(100, 0, 0.03)).toBe(3);
    // 100 · 0.07 = 7.000000000000001 in float64, so Python's math.ceil gives 8
    expect(warmupStepsFor(100, 0, 0.07)).toBe(8);
    expect(warmupStepsFor(333, 0, 0.1)).toBe(34);
    // transformers 5: a warmup_steps in (0, 1) is a ratio
    expect(warmupStepsFor(200, 0.05, 0)).toBe(10);
    expect(warmupStepsFor(100, 0, 0)).toBe(0);
    expect(() => warmupStepsFor(100, 2.5, 0)).toThrow(ConfigError);
  });
});

describe('learning-rate schedules', () => {
  it('linear: warmup from 0, then down to 0 at the last step', () => {
    const s = sched({ type: 'linear' });
    // warmup: λ = s / 10
    expect(s.lrAt(0)).toBe(0);
    expect(s.lrAt(1)).toBeCloseTo(LR * 0.1, 15);
    expect(s.lrAt(5)).toBeCloseTo(LR * 0.5, 15);
    // decay: λ = (100 − s) / 90
    expect(s.lrAt(10)).toBe(LR);
    expect(s.lrAt(55)).toBeCloseTo(LR * 0.5, 15);
    expect(s.lrAt(91)).toBeCloseTo((LR * 9) / 90, 15);
    expect(s.lrAt(100)).toBe(0);
    expect(s.lrAt(120)).toBe(0);
    // no warmup: the first update already runs at the full rate
    expect(sched({ type: 'linear', warmupSteps: 0 }).lrAt(0)).toBe(LR);
    expect(sched({ type: 'linear', warmupSteps: 0 }).lrAt(25)).toBeCloseTo(LR * 0.75, 15);
  });

  it('cosine: half a cosine from the peak to 0 after warmup', () => {
    const s = sched({ type: 'cosine' });
    expect(s.lrAt(0)).toBe(0);
    expect(s.lrAt(4)).toBeCloseTo(LR * 0.4, 15);
    expect(s.lrAt(10)).toBe(LR);
    // progress (40 − 10)/90 = 1/3: ½(1 + cos(π/3)) = 0.75
    expect(s.lrAt(40)).toBeCloseTo(LR * 0.75, 15);
    // progress ½: ½(1 + cos(π/2)) = 0.5
    expect(s.lrAt(55)).toBeCloseTo(LR * 0.5, 15);
    // progress 2/3: ½(1 + cos(2π/3)) = 0.25
    expect(s.lrAt(70)).toBeCloseTo(LR * 0.25, 15);
    expect(s.lrAt(100)).toBeCloseTo(0, 20);
    // past the end the cosine rises again (transformers does not clamp the progress)
    expect(s.lrAt(190)).toBeCloseTo(LR, 15);
  });

  it('cosine_with_min_lr: the cosine factor rescaled to [min_lr_rate, 1]', () => {
    const s = sched({ type: 'cosine_with_min_lr', minLrRate: 0.1 });
    expect(s.lrAt(0)).toBe(0);
    expect(s.lrAt(5)).toBeCloseTo(LR * 0.5, 15);
    expect(s.lrAt(10)).toBeCloseTo(LR, 15);
    // 0.75·0.9 + 0.1 = 0.775; 0.5·0.9 + 0.1 = 0.55; 0·0.9 + 0.1 = 0.1
    expect(s.lrAt(40)).toBeCloseTo(LR * 0.775, 15);
    expect(s.lrAt(55)).toBeCloseTo(LR * 0.55, 15);
    expect(s.lrAt(100)).toBeCloseTo(LR * 0.1, 15);
    // min_lr = 2e-5 is the rate 2e-5 / 2e-4 = 0.1
    const m = sched({ type: 'cosine_with_min_lr', minLr: 2e-5 });
    for (const k of [0, 10, 40, 55, 100]) expect(m.lrAt(k)).toBeCloseTo(s.lrAt(k), 15);
    expect(() => sched({ type: 'cosine_with_min_lr' })).toThrow(/min_lr or lr_scheduler_kwargs.min_lr_rate/);
    expect(() => sched({ type: 'cosine_with_min_lr', minLr: 1e-5, minLrRate: 0.1 })).toThrow(/only one/);
  });

  it('constant_with_warmup and constant', () => {
    const w = sched({ type: 'constant_with_warmup', warmupSteps: 4 });
    expect([0, 1, 2, 3, 4, 50, 100].map((k) => w.factorAt(k))).toEqual([0, 0.25, 0.5, 0.75, 1, 1, 1]);
    // get_scheduler gives the constant schedule no warmup at all
    const c = sched({ type: 'constant', warmupSteps: 4 });
    expect(c.warmupSteps).toBe(0);
    expect([0, 1, 99, 100].map((k) => c.lrAt(k))).toEqual([LR, LR, LR, LR]);
  });

  it('uses warmup_ratio when warmup_steps is 0', () => {
    // ceil(100 · 0.07) = 8 warmup steps
    const s = sched({ type: 'linear', warmupSteps: 0, warmupRatio: 0.07 });
    expect(s.warmupSteps).toBe(8);
    expect(s.lrAt(2)).toBeCloseTo(LR * 0.25, 15);
    expect(s.lrAt(8)).toBe(LR);
    expect(s.lrAt(54)).toBeCloseTo(LR * 0.5, 15);
  });

  it('refuses bad settings with the key to fix', () => {
    expect(() => sched({ type: 'linear', totalSteps: 0 })).toThrow(/total number of optimiser steps/);
    expect(() => sched({ type: 'cosine', numCycles: 0 })).toThrow(/num_cycles/);
    expect(() => sched({ type: 'linear' }).lrAt(-1)).toThrow(ConfigError);
    expect(() => new LrSchedule({ ...base, type: 'polynomial' as never })).toThrow(/lr_scheduler_type/);
  });
});
