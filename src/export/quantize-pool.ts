import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ExportError } from '../errors.js';
import { quantizeRows, type GgmlType } from './gguf-quants.js';
import { applyLoraDelta, type LoraDelta } from './lora-delta.js';

/**
 * Encoding of weight chunks (LoRA term added, then converted to a ggml type) on worker threads.
 * llama.cpp's K-quant search is ~1 µs per weight in JavaScript, so a Qwen3-4B Q4_K_M export runs
 * on every core: chunks are handed out in order and their bytes come back as promises that the
 * writer awaits in the same order, with at most 2 × threads chunks in flight (bounded memory).
 *
 * The workers run the compiled quantize-worker.js next to this module. When it is not there (the
 * TypeScript sources run directly, as under vitest) or threads is 1, jobs run inline on the
 * calling thread with the same function, so the output never depends on the thread count.
 */

export interface QuantizeJob {
  readonly type: GgmlType;
  /** (rows, nPerRow) f32; transferred to the worker. */
  readonly values: Float32Array;
  readonly nPerRow: number;
  readonly delta?: LoraDelta;
  /** Names the tensor in errors. */
  readonly where: string;
}

/** The bytes of a job: values (+ delta) as `type`. */
export function encodeChunk(job: QuantizeJob): Uint8Array {
  if (job.delta) applyLoraDelta(job.values, job.delta);
  return quantizeRows(job.type, job.values, job.nPerRow, job.where);
}

export interface QuantizePoolOptions {
  /** Worker threads; default: the machine's available parallelism, at most 16. 1 runs inline. */
  readonly threads?: number;
  /** The worker script (tests substitute their own). */
  readonly workerUrl?: URL;
}

interface Pending {
  resolve: (b: Uint8Array) => void;
  reject: (e: Error) => void;
}

export class QuantizePool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { id: number; job: QuantizeJob }[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly busy = new Map<Worker, number>();
  private nextId = 0;
  private failure: Error | undefined;

  private constructor(readonly threads: number, workerUrl: URL | undefined) {
    for (let i = 0; workerUrl && i < threads; i++) {
      // --input-type (node -e scripts) is refused for a worker's file entry point.
      const w = new Worker(workerUrl, { execArgv: process.execArgv.filter((a) => !a.startsWith('--input-type')) });
      w.on('message', (msg: { id: number; bytes?: Uint8Array; error?: string }) => this.done(w, msg));
      w.on('error', (e) => this.fail(new ExportError(`quantiser worker failed: ${e.message}`, { cause: e })));
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  static create(options: QuantizePoolOptions = {}): QuantizePool {
    const threads = Math.max(1, Math.floor(options.threads ?? Math.min(16, availableParallelism())));
    const url = options.workerUrl ?? new URL('./quantize-worker.js', import.meta.url);
    const usable = threads > 1 && url.protocol === 'file:' && existsSync(fileURLToPath(url));
    return new QuantizePool(usable ? threads : 1, usable ? url : undefined);
  }

  /** True when jobs run on worker threads. */
  get parallel(): boolean {
    return this.workers.length > 0;
  }

  /** How many jobs a caller should keep in flight. */
  get depth(): number {
    return this.parallel ? 2 * this.workers.length : 1;
  }

  /** Encodes `job` (its values array is transferred away when workers run it). */
  run(job: QuantizeJob): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    if (!this.parallel) {
      try {
        return Promise.resolve(encodeChunk(job));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    // Only a buffer the array owns whole can be transferred.
    if (job.values.byteOffset !== 0 || job.values.byteLength !== job.values.buffer.byteLength) job = { ...job, values: job.values.slice() };
    const id = this.nextId++;
    const p = new Promise<Uint8Array>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.queue.push({ id, job });
    this.pump();
    return p;
  }

  /** Stops the workers; jobs still pending are rejected. */
  async close(): Promise<void> {
    this.fail(new ExportError('quantiser pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.pop()!;
      const { id, job } = this.queue.shift()!;
      this.busy.set(w, id);
      const transfer = [job.values.buffer as ArrayBuffer];
      w.postMessage({ id, job }, transfer);
    }
  }

  private done(w: Worker, msg: { id: number; bytes?: Uint8Array; error?: string }): void {
    this.busy.delete(w);
    this.idle.push(w);
    const p = this.pending.get(msg.id);
    this.pending.delete(msg.id);
    if (p) {
      if (msg.bytes) p.resolve(msg.bytes);
      else p.reject(new ExportError(msg.error ?? 'quantiser worker returned nothing'));
    }
    this.pump();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.queue.length = 0;
  }
}

/** One encoded piece of a stream: the tensor it belongs to and its job. */
export interface NamedJob {
  readonly name: string;
  readonly job: QuantizeJob;
}

/**
 * Runs `jobs` through `pool` and hands each result to `sink` in the jobs' order, keeping at most
 * pool.depth jobs in flight. `sink` is called with the tensor name and its next bytes.
 */
export async function encodeInOrder(pool: QuantizePool, jobs: AsyncIterable<NamedJob>, sink: (name: string, bytes: Uint8Array) => Promise<void>): Promise<void> {
  const inFlight: { name: string; bytes: Promise<Uint8Array> }[] = [];
  try {
    for await (const { name, job } of jobs) {
      inFlight.push({ name, bytes: pool.run(job) });
      if (inFlight.length >= pool.depth) {
        const next = inFlight.shift()!;
        await sink(next.name, await next.bytes);
      }
    }
    while (inFlight.length > 0) {
      const next = inFlight.shift()!;
      await sink(next.name, await next.bytes);
    }
  } finally {
    // Settle what is left so no rejection goes unhandled.
    await Promise.allSettled(inFlight.map((f) => f.bytes));
  }
}
