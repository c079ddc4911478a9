/**
 * A bound on the GPU work queued ahead of the host: at most two micro-batches in flight. After
 * micro-batch i is submitted, `afterSubmit` waits until micro-batch i − 1 (the one before last) is
 * done — never the one just submitted, so the GPU always has the next micro-batch queued while the
 * host prepares the one after. Without it a run could queue minutes of GPU work (about 80
 * micro-batches at accumulation 8, logging every 10 steps), and Ctrl-C, NaN checks and device loss
 * would be seen only that much later.
 */
export interface SubmittedQueue {
  onSubmittedWorkDone(): Promise<unknown>;
}

export class GpuQueueBound {
  /** Resolves when everything submitted up to the last micro-batch is done. */
  private last: Promise<unknown> | undefined;

  constructor(private readonly queue: SubmittedQueue) {}

  /** Call right after a micro-batch's submit: waits on the one before it, then remembers this one. */
  async afterSubmit(): Promise<void> {
    const beforeLast = this.last;
    this.last = this.queue.onSubmittedWorkDone();
    if (beforeLast) await beforeLast;
  }
}
