import { describe, expect, it } from 'vitest';
import { submitDispatches } from '../../src/kernels/dispatch.js';
import { GatherRows, gatherRowsRef } from '../../src/kernels/gather-rows.js';
import { NAN_WORD } from '../helpers/compare.js';
import { testGpu } from '../helpers/gpu.js';
import { Rng } from '../helpers/random.js';

describe('gather rows', () => {
  for (const [srcRows, width, rows] of [[1, 1, 1], [48, 2560, 4], [37, 333, 11]] as const) {
    it(`copies exactly at srcRows=${srcRows}, width=${width}, rows=${rows}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(srcRows + width);
      const src = rng.f32(srcRows * width);
      const index = Int32Array.from({ length: rows }, () => rng.int(0, srcRows));
      const out = gpu.tensor('out', [rows, width], 'f32');
      gpu.fill32(out, NAN_WORD);
      const g = await GatherRows.create(gpu);
      submitDispatches(gpu, [
        g.forward('gather', out, gpu.tensorFrom('src', [srcRows, width], 'f32', src), gpu.tensorFrom('index', [rows], 'i32', index)),
      ]);
      // a copy: bit-exact
      expect(Array.from(await gpu.readF32(out))).toEqual(Array.from(gatherRowsRef(src, width, index)));
    });
  }
});
