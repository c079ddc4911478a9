import { describe, expect, it } from 'vitest';
import { GpuQueueBound } from '../../src/train/gpu-queue.js';
import { testGpu } from '../helpers/gpu.js';

/** A queue whose "work done" promises the test resolves by hand, one per submit. */
function manualQueue() {
  const done: (() => void)[] = [];
  return {
    done,
    onSubmittedWorkDone: () => new Promise<void>((resolve) => done.push(resolve)),
  };
}

const settled = async (p: Promise<void>): Promise<boolean> => {
  let yes = false;
  void p.then(() => (yes = true));
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return yes;
};

describe('GpuQueueBound', () => {
  it('waits on the micro-batch before last, never on the one just submitted', async () => {
    const q = manualQueue();
    const bound = new GpuQueueBound(q);
    // micro-batch 1: nothing before it
    expect(await settled(bound.afterSubmit())).toBe(true);
    // micro-batch 2: waits for 1 only; 2 itself stays unfinished
    const second = bound.afterSubmit();
    expect(await settled(second)).toBe(false);
    q.done[0]();
    expect(await settled(second)).toBe(true);
    // micro-batch 3: waits for 2, not 3
    const third = bound.afterSubmit();
    expect(await settled(third)).toBe(false);
    q.done[1]();
    expect(await settled(third)).toBe(true);
    expect(q.done).toHaveLength(3); // 3 is still in flight: two at most
  });

  it('on a real device queue each wait returns once the earlier submit is done', async () => {
    const gpu = await testGpu();
    const bound = new GpuQueueBound(gpu.device.queue);
    for (let i = 0; i < 4; i++) {
      gpu.device.queue.submit([gpu.device.createCommandEncoder().finish()]);
      await bound.afterSubmit();
    }
    await gpu.device.queue.onSubmittedWorkDone();
  });
});
