import { inflateSync } from 'node:zlib';

/**
 * A minimal PNG decoder for screenshots (8-bit RGB or RGBA, not interlaced — what Chromium writes):
 * chunks → concatenated IDAT → zlib inflate → undo the per-row filters (PNG spec §9: None, Sub, Up,
 * Average, Paeth). Anything else is refused with what was found.
 */
export interface Image {
  readonly width: number;
  readonly height: number;
  /** (height, width, 3) u8 — RGB, alpha dropped. */
  readonly rgb: Uint8Array;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function decodePng(file: Uint8Array): Image {
  if (!SIGNATURE.every((b, i) => file[i] === b)) throw new Error('decodePng: not a PNG (bad signature)');
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Uint8Array[] = [];
  for (let at = 8; at < file.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...file.subarray(at + 4, at + 8));
    const data = file.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      const [depth, color, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || (color !== 2 && color !== 6) || interlace !== 0) {
        throw new Error(`decodePng: only 8-bit RGB/RGBA non-interlaced PNGs are handled; found depth ${depth}, colour type ${color}, interlace ${interlace}`);
      }
      channels = color === 2 ? 3 : 4;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== height * (stride + 1)) throw new Error(`decodePng: ${raw.length} inflated bytes, expected ${height * (stride + 1)} for ${width}×${height}×${channels}`);
  const pixels = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = pixels.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? row[i - channels] : 0;
      const b = up[i];
      const c = i >= channels ? up[i - channels] : 0;
      let predictor: number;
      if (filter === 0) predictor = 0;
      else if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) predictor = paeth(a, b, c);
      else throw new Error(`decodePng: row ${y} has unknown filter type ${filter}`);
      row[i] = (src[i] + predictor) & 0xff;
    }
  }
  const rgb = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) for (let k = 0; k < 3; k++) rgb[p * 3 + k] = pixels[p * channels + k];
  return { width, height, rgb };
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Pixels within `tolerance` (per channel) of `hex` ("#rrggbb"), with their bounding box. */
export function colorPixels(img: Image, hex: string, tolerance: number): { count: number; x0: number; x1: number; y0: number; y1: number } {
  const target = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let count = 0;
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const p = (y * img.width + x) * 3;
      if (Math.abs(img.rgb[p] - target[0]) <= tolerance && Math.abs(img.rgb[p + 1] - target[1]) <= tolerance && Math.abs(img.rgb[p + 2] - target[2]) <= tolerance) {
        count++;
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
    }
  }
  return { count, x0, x1, y0, y1 };
}

/** Pixels that are not (near) white: anything drawn at all. */
export function nonWhitePixels(img: Image): number {
  let n = 0;
  for (let p = 0; p < img.width * img.height; p++) if (img.rgb[p * 3] < 245 || img.rgb[p * 3 + 1] < 245 || img.rgb[p * 3 + 2] < 245) n++;
  return n;
}
