import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';

/**
 * Headless Chromium for the report tests (Debian package `chromium`). One page load per call:
 * a PNG screenshot, and the browser's console messages.
 *
 * Console messages are read from Chromium's own log (`--enable-logging=stderr --v=0`), where every
 * message a page sends to the console — console.error, an uncaught exception, an SVG attribute it
 * could not parse ("Error: <path> attribute d: Expected number"), a load refused by the page's
 * Content-Security-Policy — appears as one line tagged CONSOLE (`INFO:CONSOLE:12] "..."` in
 * Chromium 156; `INFO:CONSOLE(12)` in older versions; both matched). The log does not keep the
 * level (console.error is logged as INFO), so a page without scripts should produce none at all.
 * This is more robust than instrumenting the page: it needs no script inside the report (whose
 * CSP forbids scripts) and it sees errors raised before any script could run. The tests prove the
 * detection works on the installed version with a page built to fail.
 */

const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

/** The first Chromium on PATH, or undefined. */
export function findChromium(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of NAMES) {
      const path = join(dir, name);
      try {
        accessSync(path, constants.X_OK);
        return path;
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

export interface PageShot {
  readonly png: Uint8Array;
  /** Lines of the log that carry a console message. */
  readonly console: string[];
  readonly stderr: string;
}

const CONSOLE_LINE = /:CONSOLE[:(]/;

/** Loads `htmlPath` in headless Chromium at width × height CSS px (device scale 1) and takes a screenshot. */
export async function screenshotPage(chromium: string, htmlPath: string, width: number, height: number): Promise<PageShot> {
  const work = await mkdtemp(join(tmpdir(), 'chromium-shot-'));
  try {
    const png = join(work, 'shot.png');
    const args = [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--enable-logging=stderr', '--v=0',
      `--user-data-dir=${join(work, 'profile')}`, '--no-first-run', '--hide-scrollbars', '--force-device-scale-factor=1',
      `--screenshot=${png}`, `--window-size=${width},${height}`,
      `file://${htmlPath}`,
    ];
    let stderr = '';
    try {
      const r = await promisify(execFile)(chromium, args, { timeout: 90_000, maxBuffer: 16 << 20 });
      stderr = r.stderr;
    } catch (e) {
      const x = e as { stderr?: string; message: string };
      throw new Error(`${chromium} failed on ${htmlPath}: ${x.message}\n${x.stderr ?? ''}`);
    }
    return { png: await readFile(png), console: stderr.split('\n').filter((l) => CONSOLE_LINE.test(l)), stderr };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
