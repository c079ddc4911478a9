/**
 * Worker thread of QuantizePool: receives {id, job} (a QuantizeJob), answers {id, bytes} with the
 * encoded bytes transferred, or {id, error}.
 */
import { parentPort } from 'node:worker_threads';
import { encodeChunk, type QuantizeJob } from './quantize-pool.js';

parentPort?.on('message', (msg: { id: number; job: QuantizeJob }) => {
  try {
    const bytes = encodeChunk(msg.job);
    parentPort!.postMessage({ id: msg.id, bytes }, [bytes.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ id: msg.id, error: (e as Error).message });
  }
});
