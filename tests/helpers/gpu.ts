import { afterAll } from 'vitest';
import { Gpu } from '../../src/kernels/gpu.js';

/**
 * One Gpu per test file (vitest runs each file in its own process): opened on first use,
 * destroyed after the file's tests so the worker can exit.
 */
let opened: Promise<Gpu> | undefined;

export function testGpu(): Promise<Gpu> {
  opened ??= Gpu.open();
  return opened;
}

afterAll(async () => {
  if (opened) (await opened).destroy();
});
