import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/config/paths.js';
import { Gpu } from '../../src/kernels/gpu.js';
import { tensorCoreUnsupportedReason } from '../../src/model/compute-path.js';

/**
 * `train --dry-run` says which compute path the run takes (issue 11 item 5): in the plan's first
 * line and on a "compute path:" line with why. Here (lavapipe, CI) auto takes f32 and says what the
 * adapter lacks; float16 is refused (exit 2) naming it; float32 says it was asked for. On an adapter
 * with tensor cores auto takes them.
 */
const train = join(packageRoot(), 'train.js');
const dryRun = (...set: string[]) => spawnSync(process.execPath, [train, '--dry-run', ...set.flatMap((s) => ['--set', s])], { encoding: 'utf8' });

describe('train --dry-run prints the compute path', () => {
  it('auto, float32 and float16 on this adapter', async () => {
    const gpu = await Gpu.open();
    const reason = tensorCoreUnsupportedReason(gpu);
    gpu.destroy();
    const auto = dryRun();
    expect(auto.status, auto.stderr).toBe(0);
    if (reason) {
      expect(auto.stdout).toMatch(/^memory plan: batch .*, compute f32; /m);
      expect(auto.stdout).toMatch(/^compute path: f32 \(compute_dtype: auto; no tensor cores: .*lacks .*\)$/m);
      const f16 = dryRun('compute_dtype=float16');
      expect(f16.status).toBe(2);
      expect(f16.stderr).toMatch(/compute_dtype: float16 needs tensor cores \(subgroup matrices\), but the adapter .* lacks /);
    } else {
      expect(auto.stdout).toMatch(/^compute path: tensor cores/m);
    }
    const f32 = execFileSync(process.execPath, [train, '--dry-run', '--set', 'compute_dtype=float32'], { encoding: 'utf8' });
    expect(f32).toMatch(/^compute path: f32 \(compute_dtype: float32\)$/m);
  }, 120_000);
});
