/**
 * Test-only reader of TensorBoard event files, written from the formats' specifications, sharing
 * no code with src/report (its own CRC-32C, its own protobuf wire decoding):
 *
 *   TFRecord (tensorflow/core/lib/io/record_writer.cc): uint64 LE length, uint32 masked CRC-32C of
 *   the 8 length bytes, data, uint32 masked CRC-32C of data; mask(c) = rotr(c, 15) + 0xa282ead8.
 *   CRC-32C: reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF (RFC 3720 B.4).
 *   Protobuf wire format: key = (field << 3) | wire type; 0 varint, 1 fixed64, 2 length, 5 fixed32.
 *   Event: wall_time 1 double, step 2 int64, file_version 3 string, summary 5.
 *   Summary.value 1; Value: tag 1, simple_value 2 float, tensor 8, metadata 9.
 *   TensorProto: dtype 1, string_val 8. SummaryMetadata.plugin_data 1: plugin_name 1.
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function masked(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) % 2 ** 32;
}

/** The records' data, every CRC checked; throws naming the record and offset on any mismatch. */
export function readRecords(file: Uint8Array): Uint8Array[] {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < file.length) {
    if (at + 12 > file.length) throw new Error(`record ${out.length} at ${at}: truncated header`);
    const len = Number(view.getBigUint64(at, true));
    if (view.getUint32(at + 8, true) !== masked(file.subarray(at, at + 8))) throw new Error(`record ${out.length} at ${at}: bad length CRC`);
    const data = file.subarray(at + 12, at + 12 + len);
    if (data.length !== len || at + 16 + len > file.length) throw new Error(`record ${out.length} at ${at}: truncated data`);
    if (view.getUint32(at + 12 + len, true) !== masked(data)) throw new Error(`record ${out.length} at ${at}: bad data CRC`);
    out.push(data);
    at += 16 + len;
  }
  return out;
}

type Field = { no: number; wire: number; varint?: bigint; bytes?: Uint8Array; fixed?: DataView };

function fields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++];
      if (b === undefined) throw new Error('truncated varint');
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const no = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ no, wire, varint: varint() });
    else if (wire === 1 || wire === 5) {
      const n = wire === 1 ? 8 : 4;
      out.push({ no, wire, fixed: new DataView(buf.buffer, buf.byteOffset + i, n) });
      i += n;
    } else if (wire === 2) {
      const n = Number(varint());
      out.push({ no, wire, bytes: buf.subarray(i, i + n) });
      i += n;
    } else throw new Error(`unsupported wire type ${wire} for field ${no}`);
  }
  return out;
}

const text = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);

export interface DecodedValue {
  tag: string;
  simpleValue?: number;
  plugin?: string;
  strings?: string[];
}

export interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: DecodedValue[];
}

export function decodeEvent(data: Uint8Array): DecodedEvent {
  const e: DecodedEvent = { wallTime: NaN, step: 0, values: [] };
  for (const f of fields(data)) {
    if (f.no === 1 && f.wire === 1) e.wallTime = f.fixed!.getFloat64(0, true);
    else if (f.no === 2 && f.wire === 0) e.step = Number(BigInt.asIntN(64, f.varint!));
    else if (f.no === 3 && f.wire === 2) e.fileVersion = text(f.bytes);
    else if (f.no === 5 && f.wire === 2) {
      for (const v of fields(f.bytes!).filter((x) => x.no === 1)) e.values.push(decodeValue(v.bytes!));
    }
  }
  return e;
}

function decodeValue(buf: Uint8Array): DecodedValue {
  const v: DecodedValue = { tag: '' };
  for (const f of fields(buf)) {
    if (f.no === 1) v.tag = text(f.bytes);
    else if (f.no === 2 && f.wire === 5) v.simpleValue = f.fixed!.getFloat32(0, true);
    else if (f.no === 9) {
      const pd = fields(f.bytes!).find((x) => x.no === 1);
      if (pd) v.plugin = text(fields(pd.bytes!).find((x) => x.no === 1)?.bytes);
    } else if (f.no === 8) {
      const t = fields(f.bytes!);
      if (t.find((x) => x.no === 1)?.varint !== 7n) throw new Error(`tensor of ${v.tag}: dtype is not DT_STRING (7)`);
      v.strings = t.filter((x) => x.no === 8).map((x) => text(x.bytes));
    }
  }
  return v;
}

/** Every event of an event file. */
export function readEventFile(file: Uint8Array): DecodedEvent[] {
  return readRecords(file).map(decodeEvent);
}
