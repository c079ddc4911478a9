/**
 * Fewer points, same picture: M4 decimation (Jugel et al., VLDB 2014). The x range is cut into
 * `buckets` equal columns (one per pixel of the plot); of the points falling in a column only the
 * first, the last, the lowest and the highest are kept, in their original order. A polyline through
 * those draws the same pixels as one through all points, so a chart of 100,000 steps is at most
 * 4 × width points in the SVG.
 */

/** A point (x, y) of a series; x ascending. */
export type Point = readonly [number, number];

/** Points with x in [xMin, xMax] (ascending x), decimated to at most 4 per bucket. Short inputs come back as they are. */
export function decimateM4(points: readonly Point[], xMin: number, xMax: number, buckets: number): Point[] {
  const n = Math.max(1, Math.floor(buckets));
  if (points.length <= 4 * n || !(xMax > xMin)) return points.slice();
  const out: Point[] = [];
  const scale = n / (xMax - xMin);
  let i = 0;
  while (i < points.length) {
    const column = Math.min(n - 1, Math.max(0, Math.floor((points[i][0] - xMin) * scale)));
    const first = i;
    let lo = i;
    let hi = i;
    while (i < points.length && Math.min(n - 1, Math.max(0, Math.floor((points[i][0] - xMin) * scale))) === column) {
      if (points[i][1] < points[lo][1]) lo = i;
      if (points[i][1] > points[hi][1]) hi = i;
      i++;
    }
    const last = i - 1;
    for (const k of [...new Set([first, lo, hi, last])].sort((a, b) => a - b)) out.push(points[k]);
  }
  return out;
}
