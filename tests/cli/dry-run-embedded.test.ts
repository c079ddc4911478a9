import { describe, expect, it } from 'vitest';
import { runDryRun } from '../../src/cli/dry-run.js';
import { embeddedDefaultConfigPath } from '../../src/cli/train-defaults.js';
import { loadConfig } from '../../src/config/load.js';

describe('--dry-run on the embedded default', () => {
  it('uses the embedded model\'s (bundled) tokenizer without a "could not be read" note', async () => {
    const lines: string[] = [];
    const { config } = loadConfig(embeddedDefaultConfigPath());
    await runDryRun(config, { out: (s) => lines.push(s), env: { HF_HUB_OFFLINE: '1', HF_HOME: '/nonexistent-hf-home' } });
    const text = lines.join('\n');
    expect(text).toMatch(/steps/);
    expect(text).not.toMatch(/could not be read|not a Hugging Face Hub id/);
  }, 60_000);
});
