import { describe, expect, it } from 'vitest';
import { decimateM4, type Point } from '../../src/report/decimate.js';
import { formatTick, niceTicks, renderLineChart, type ChartSpec } from '../../src/report/line-chart.js';
import { Rng } from '../helpers/random.js';

/** Every number in the SVG's coordinates: path data, circle centres, line ends, text positions. */
function coordinates(svg: string): string[] {
  const out: string[] = [];
  for (const m of svg.matchAll(/\b(?:d|cx|cy|x|y|x1|x2|y1|y2)="([^"]*)"/g)) out.push(...m[1].split(/[\sML]+/).filter((s) => s !== ''));
  return out;
}

/** The (x, y) vertices of each <path> (pixel coordinates). */
function paths(svg: string): [number, number][][] {
  return [...svg.matchAll(/<path d="([^"]*)"/g)].map((m) =>
    m[1].split(/\s*(?=[ML])/).map((seg) => seg.slice(1).trim().split(/\s+/).map(Number) as [number, number]),
  );
}

const spec = (points: Point[], over: Partial<ChartSpec> = {}): ChartSpec => ({
  id: 'c', title: 't', xLabel: 'step', width: 600, height: 300,
  series: [{ name: 'loss', color: '#1f77b4', points }], ...over,
});

describe('decimateM4', () => {
  it('keeps, per pixel column, the first, last, lowest and highest point (checked against a brute-force scan)', () => {
    const rng = new Rng(7);
    const n = 10_007;
    const pts: Point[] = Array.from({ length: n }, (_, i) => [i * 0.37 + 3, rng.normal() + Math.sin(i / 300)]);
    const buckets = 257;
    const xMin = pts[0][0];
    const xMax = pts[n - 1][0];
    const out = decimateM4(pts, xMin, xMax, buckets);
    expect(out.length).toBeLessThanOrEqual(4 * buckets);
    expect(out[0]).toBe(pts[0]);
    expect(out[out.length - 1]).toBe(pts[n - 1]);
    // Order preserved and every kept point is an original point.
    for (let i = 1; i < out.length; i++) expect(out[i][0]).toBeGreaterThan(out[i - 1][0]);
    const column = (x: number): number => Math.min(buckets - 1, Math.floor(((x - xMin) / (xMax - xMin)) * buckets));
    const stats = (ps: readonly Point[]): Map<number, { lo: number; hi: number; first: number; last: number }> => {
      const m = new Map<number, { lo: number; hi: number; first: number; last: number }>();
      for (const [x, y] of ps) {
        const c = column(x);
        const s = m.get(c);
        if (!s) m.set(c, { lo: y, hi: y, first: y, last: y });
        else Object.assign(s, { lo: Math.min(s.lo, y), hi: Math.max(s.hi, y), last: y });
      }
      return m;
    };
    expect(stats(out)).toEqual(stats(pts));
  });

  it('returns short series unchanged', () => {
    const pts: Point[] = [[1, 2], [2, NaN], [3, 4]];
    expect(decimateM4(pts, 1, 3, 100)).toEqual(pts);
  });
});

describe('niceTicks / formatTick', () => {
  it('gives 1-2-5 spacing inside the range and labels that tell ticks apart', () => {
    const t = niceTicks(0.00012, 0.00021, 5);
    expect(t.step).toBeCloseTo(2e-5, 18);
    for (const v of t.values) expect(v >= 0.00012 - 1e-12 && v <= 0.00021 + 1e-12).toBe(true);
    const labels = t.values.map((v) => formatTick(v, t.step, 0.00021));
    expect(new Set(labels).size).toBe(labels.length);
    expect(labels[0]).toMatch(/e-4$/);
    expect(niceTicks(9, 11, 5, 1).values).toEqual([9, 10, 11]); // integer steps on the step axis
  });
});

describe('renderLineChart', () => {
  it('draws one point as a dot inside the plot, axes widened around it', () => {
    const svg = renderLineChart(spec([[7, 2.5]]));
    expect(svg).not.toContain('<path');
    const dot = /<circle cx="([\d.]+)" cy="([\d.]+)"/.exec(svg)!;
    expect(Number(dot[1])).toBeGreaterThan(72);
    expect(Number(dot[1])).toBeLessThan(600 - 18);
    expect(Number(dot[2])).toBeGreaterThan(30);
    expect(Number(dot[2])).toBeLessThan(300 - 42);
    expect(coordinates(svg).every((c) => Number.isFinite(Number(c)))).toBe(true);
  });

  it('breaks the line at NaN / Infinity, never writes them, and says how many were left out', () => {
    const pts: Point[] = [[1, 3], [2, 2.5], [3, NaN], [4, 2], [5, 1.8], [6, Infinity], [7, 1.5]];
    const svg = renderLineChart(spec(pts));
    expect(svg).not.toMatch(/NaN|Infinity/);
    expect(coordinates(svg).every((c) => Number.isFinite(Number(c)))).toBe(true);
    expect(paths(svg).map((p) => p.length)).toEqual([2, 2]); // [1,2] and [4,5]; the lone [7] is a dot
    expect(svg.match(/<circle/g)?.length).toBe(1);
    expect(svg).toContain('2 non-finite values not drawn');
  });

  it('maps data to pixels monotonically (higher loss is higher on screen) within the plot box', () => {
    const pts: Point[] = [[0, 1], [10, 3], [20, 2]];
    const [path] = paths(renderLineChart(spec(pts)));
    expect(path.length).toBe(3);
    expect(path[0][0]).toBeLessThan(path[1][0]);
    expect(path[1][0]).toBeLessThan(path[2][0]);
    expect(path[1][1]).toBeLessThan(path[2][1]); // y = 3 above y = 2 (SVG y grows downwards)
    expect(path[2][1]).toBeLessThan(path[0][1]);
    for (const [x, y] of path) {
      expect(x >= 72 && x <= 582).toBe(true);
      expect(y >= 30 && y <= 258).toBe(true);
    }
  });

  it('decimates thousands of points to at most 4 per pixel column, keeping the extremes', () => {
    const rng = new Rng(3);
    const pts: Point[] = Array.from({ length: 20_000 }, (_, i) => [i + 1, 5 + rng.normal()]);
    pts[12_345] = [12_346, 20]; // a spike must survive
    const svg = renderLineChart(spec(pts));
    const [path] = paths(svg);
    const plotWidth = 600 - 72 - 18;
    expect(path.length).toBeLessThanOrEqual(4 * plotWidth);
    expect(path.length).toBeGreaterThan(plotWidth);
    const top = Math.min(...path.map((p) => p[1]));
    expect(top).toBeCloseTo(30 + (300 - 30 - 42) * 0.05 / 1.1, 0); // the spike is the max: 5 % padding above it
  });

  it('draws an empty frame saying "no data yet" without a legend when there is nothing to plot', () => {
    const svg = renderLineChart(spec([]));
    expect(svg).toContain('no data yet');
    expect(svg).not.toContain('#1f77b4');
  });

  it('escapes series names and the title', () => {
    const svg = renderLineChart(spec([[1, 1], [2, 2]], { title: 'a "b" <c>', series: [{ name: '<x> & y', color: '#000000', points: [[1, 1], [2, 2]] }] }));
    expect(svg).toContain('aria-label="a &quot;b&quot; &lt;c&gt;"');
    expect(svg).toContain('&lt;x&gt; &amp; y');
    expect(svg).not.toContain('<x>');
  });
});
