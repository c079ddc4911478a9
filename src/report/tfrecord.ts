import CRC32C from 'crc-32/crc32c.js';

/**
 * TFRecord framing (TensorFlow's record_writer / TensorBoard's event files), one record:
 *
 *   uint64  length                 little-endian, bytes of data
 *   uint32  masked_crc32c(length)  over the 8 length bytes
 *   byte    data[length]
 *   uint32  masked_crc32c(data)
 *
 * masked_crc(x) = ((crc >>> 15) | (crc << 17)) + 0xa282ead8 (mod 2³²), crc = CRC-32C (Castagnoli).
 */
const MASK_DELTA = 0xa282ead8;

export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = CRC32C.buf(bytes) >>> 0;
  return (((crc >>> 15) | (crc << 17)) + MASK_DELTA) >>> 0;
}

/** One framed record around `data`. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}
