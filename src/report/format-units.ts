/**
 * How the run's numbers read to a person: durations ("3m12s"), learning rates ("1.98e-04"), byte
 * counts ("5.7 GiB"). Shared by the log lines, the progress bar and report.html so that all three
 * print the same value the same way.
 */

/** "45s", "3m12s", "1h02m", "2d03h"; "?" for a negative or non-finite estimate. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad2(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad2(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad2(Math.floor((s % 86400) / 3600))}h`;
}

/**
 * Scientific notation with a two-digit exponent, as Python's "%.2e" prints it: 1.98e-04, 2.00e-03.
 * Non-finite values print as JavaScript names them (NaN, Infinity).
 */
export function formatExp(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return String(x);
  const [mantissa, exponent] = x.toExponential(digits).split('e');
  const e = Number(exponent);
  return `${mantissa}e${e < 0 ? '-' : '+'}${pad2(Math.abs(e))}`;
}

/** "812 MiB", "5.7 GiB" (binary units, as the memory plan prints them). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  const GiB = 1024 ** 3;
  const MiB = 1024 ** 2;
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(1)} GiB`;
  if (bytes >= MiB) return `${(bytes / MiB).toFixed(0)} MiB`;
  return `${(bytes / 1024).toFixed(0)} KiB`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}
