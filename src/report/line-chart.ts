import { decimateM4, type Point } from './decimate.js';
import { escapeHtml } from './escape-html.js';

/**
 * A line chart as an inline SVG string (no script, no external resource): one or more series over
 * a shared x axis, "nice" ticks with grid lines, a legend of the series that have data.
 *
 * Awkward data is part of the contract:
 *   - one point: the axes are widened around it and the point is drawn as a dot;
 *   - NaN / ±Infinity (a diverged loss): not drawn, the line breaks there, and the chart says how
 *     many values were left out;
 *   - thousands of points: each unbroken run is M4-decimated to the plot's pixel columns;
 *   - no finite point at all: an empty frame saying "no data yet".
 */

export interface ChartSeries {
  readonly name: string;
  /** "#rrggbb". */
  readonly color: string;
  /** (x, y) in ascending x; non-finite values allowed (see above). */
  readonly points: readonly Point[];
  /** A dot at every point (for sparse series such as evaluations). */
  readonly markers?: boolean;
}

export interface ChartSpec {
  /** Element id of the <svg>, unique in the page. */
  readonly id: string;
  /** Accessible name of the chart. */
  readonly title: string;
  readonly xLabel: string;
  /** Size in CSS pixels. */
  readonly width: number;
  readonly height: number;
  readonly series: readonly ChartSeries[];
}

/** Plot-area margins (CSS px): room for the y tick labels, the legend row and the x axis. */
const MARGIN = { left: 72, right: 18, top: 30, bottom: 42 } as const;
const TEXT = 'font-family="sans-serif" font-size="11" fill="#333"';

export function renderLineChart(spec: ChartSpec): string {
  const pw = spec.width - MARGIN.left - MARGIN.right;
  const ph = spec.height - MARGIN.top - MARGIN.bottom;
  const parts: string[] = [
    `<svg id="${escapeHtml(spec.id)}" xmlns="http://www.w3.org/2000/svg" width="${spec.width}" height="${spec.height}" viewBox="0 0 ${spec.width} ${spec.height}" role="img" aria-label="${escapeHtml(spec.title)}">`,
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`,
  ];
  const finite = spec.series.flatMap((s) => s.points.filter(isFinitePoint));
  const skipped = spec.series.reduce((n, s) => n + s.points.length, 0) - finite.length;
  if (finite.length === 0) {
    parts.push(`<text x="${MARGIN.left + pw / 2}" y="${MARGIN.top + ph / 2}" text-anchor="middle" ${TEXT}>no data yet</text>`);
  } else {
    const [xMin, xMax] = paddedRange(finite.map((p) => p[0]), 0, 1);
    const [yMin, yMax] = paddedRange(finite.map((p) => p[1]), 0.05, 0.1);
    const sx = (x: number): number => MARGIN.left + ((x - xMin) / (xMax - xMin)) * pw;
    const sy = (y: number): number => MARGIN.top + (1 - (y - yMin) / (yMax - yMin)) * ph;
    parts.push(...axes(xMin, xMax, yMin, yMax, sx, sy, pw, ph));
    for (const s of spec.series) parts.push(...seriesMarks(s, xMin, xMax, pw, sx, sy));
    parts.push(...legend(spec.series.filter((s) => s.points.some(isFinitePoint)), spec.width));
  }
  parts.push(`<text x="${MARGIN.left + pw / 2}" y="${spec.height - 8}" text-anchor="middle" ${TEXT}>${escapeHtml(spec.xLabel)}</text>`);
  if (skipped > 0) {
    const note = `${skipped} non-finite value${skipped === 1 ? '' : 's'} not drawn`;
    parts.push(`<text x="${spec.width - MARGIN.right}" y="${spec.height - 8}" text-anchor="end" font-family="sans-serif" font-size="11" font-style="italic" fill="#555">${note}</text>`);
  }
  parts.push('</svg>');
  return parts.join('\n');
}

function isFinitePoint(p: Point): boolean {
  return Number.isFinite(p[0]) && Number.isFinite(p[1]);
}

/** [min, max] of finite values, widened by `pad` of the span; a zero span is widened by `flat`·|v| (or 1). */
function paddedRange(values: readonly number[], pad: number, flat: number): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (hi === lo) {
    const d = Math.abs(lo) * flat || 1;
    return [lo - d, hi + d];
  }
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

/** Tick values at 1, 2 or 5 × 10^k spacing inside [lo, hi], about `count` of them; step at least `minStep`. */
export function niceTicks(lo: number, hi: number, count: number, minStep = 0): { values: number[]; step: number } {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = Math.max((norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag, minStep);
  const values: number[] = [];
  for (let k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) values.push(k * step);
  return { values, step };
}

/** A tick label precise enough to tell neighbouring ticks apart: fixed-point, or exponent form for tiny and huge values. */
export function formatTick(v: number, step: number, magnitude: number): string {
  if (Math.abs(v) < step * 1e-9) return '0';
  if (magnitude >= 1e5 || magnitude < 1e-3) {
    const digits = Math.min(3, Math.max(0, Math.floor(Math.log10(magnitude)) - Math.floor(Math.log10(step))));
    return v.toExponential(digits);
  }
  return v.toFixed(Math.min(6, Math.max(0, -Math.floor(Math.log10(step)))));
}

function axes(
  xMin: number, xMax: number, yMin: number, yMax: number,
  sx: (x: number) => number, sy: (y: number) => number, pw: number, ph: number,
): string[] {
  const out: string[] = [];
  const xt = niceTicks(xMin, xMax, Math.max(2, Math.round(pw / 110)), 1);
  const xMag = Math.max(Math.abs(xMin), Math.abs(xMax));
  for (const v of xt.values) {
    const x = sx(v).toFixed(1);
    out.push(`<line x1="${x}" y1="${MARGIN.top}" x2="${x}" y2="${MARGIN.top + ph}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${x}" y="${MARGIN.top + ph + 15}" text-anchor="middle" ${TEXT}>${formatTick(v, xt.step, xMag)}</text>`);
  }
  const yt = niceTicks(yMin, yMax, Math.max(2, Math.round(ph / 50)));
  const yMag = Math.max(Math.abs(yMin), Math.abs(yMax));
  for (const v of yt.values) {
    const y = sy(v).toFixed(1);
    out.push(`<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + pw}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${MARGIN.left - 6}" y="${y}" dy="4" text-anchor="end" ${TEXT}>${formatTick(v, yt.step, yMag)}</text>`);
  }
  return out;
}

/** The series' polylines (one per run between non-finite values, decimated), dots for lone points and markers. */
function seriesMarks(
  s: ChartSeries, xMin: number, xMax: number, pw: number,
  sx: (x: number) => number, sy: (y: number) => number,
): string[] {
  const out: string[] = [];
  const color = escapeHtml(s.color);
  const runs: Point[][] = [[]];
  for (const p of [...s.points].sort((a, b) => a[0] - b[0])) {
    if (isFinitePoint(p)) runs[runs.length - 1].push(p);
    else if (runs[runs.length - 1].length > 0) runs.push([]);
  }
  for (const run of runs) {
    if (run.length === 1 && !s.markers) out.push(dot(sx(run[0][0]), sy(run[0][1]), color));
    if (run.length < 2) continue;
    const pts = decimateM4(run, xMin, xMax, pw);
    const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)} ${sy(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`);
  }
  if (s.markers) for (const p of s.points.filter(isFinitePoint)) out.push(dot(sx(p[0]), sy(p[1]), color));
  return out;
}

function dot(x: number, y: number, color: string): string {
  return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${color}"/>`;
}

/** One entry per series with data, right-aligned in the top margin (text width estimated at 6.5 px a character). */
function legend(series: readonly ChartSeries[], width: number): string[] {
  const out: string[] = [];
  let x = width - MARGIN.right;
  for (const s of [...series].reverse()) {
    x -= s.name.length * 6.5;
    out.push(`<text x="${x.toFixed(1)}" y="18" ${TEXT}>${escapeHtml(s.name)}</text>`);
    x -= 24;
    out.push(`<line x1="${x.toFixed(1)}" y1="14" x2="${(x + 18).toFixed(1)}" y2="14" stroke="${escapeHtml(s.color)}" stroke-width="3"/>`);
    x -= 14;
  }
  return out;
}
