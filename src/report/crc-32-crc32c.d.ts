/** Types of the CRC-32C module of the crc-32 package (SheetJS), which ships none for it. */
declare module 'crc-32/crc32c.js' {
  /** CRC-32C (Castagnoli) of `data` as a signed 32-bit integer. */
  export function buf(data: Uint8Array, seed?: number): number;
}
