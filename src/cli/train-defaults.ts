import { join } from 'node:path';
import { packageRoot } from '../config/paths.js';

/** The config `node train.js` runs without --config (and `validate` checks against without one). */
export function embeddedDefaultConfigPath(): string {
  return join(packageRoot(), 'configs', 'embedded-default.yaml');
}
