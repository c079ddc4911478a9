/**
 * CSV as RFC 4180 writes it: comma-separated, fields optionally in double quotes, `""` inside
 * quotes for a quote, quoted fields may hold commas and newlines; CRLF or LF line ends; a
 * leading byte-order mark is dropped. The first record is the header.
 */
import { DataError } from '../errors.js';

/** Splits CSV text into records of fields. */
export function parseCsvRecords(text: string, where: string): string[][] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let quoted = false;
  let fieldStarted = false;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let line = 1;
  const endField = () => {
    record.push(field);
    field = '';
    fieldStarted = false;
  };
  const endRecord = () => {
    endField();
    if (!(record.length === 1 && record[0] === '')) records.push(record);
    record = [];
  };
  for (; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"') {
      if (fieldStarted) throw new DataError(`${where}: line ${line}: a quote inside an unquoted field; quote the whole field and double the inner quotes.`);
      quoted = true;
      fieldStarted = true;
    } else if (c === ',') endField();
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      endRecord();
      line++;
    } else {
      field += c;
      fieldStarted = true;
    }
  }
  if (quoted) throw new DataError(`${where}: a quoted field opened before line ${line} is never closed.`);
  if (field !== '' || record.length > 0) endRecord();
  return records;
}

/** Header + records → one object per record (keys from the header). */
export function parseCsv(text: string, where: string): { columns: string[]; rows: { values: Record<string, string> | undefined; error?: string }[] } {
  const records = parseCsvRecords(text, where);
  if (records.length === 0) return { columns: [], rows: [] };
  const columns = records[0].map((c) => c.trim());
  const rows = records.slice(1).map((r) => {
    if (r.length !== columns.length) return { values: undefined, error: `has ${r.length} fields, the header has ${columns.length}` };
    const values: Record<string, string> = {};
    columns.forEach((c, j) => (values[c] = r[j]));
    return { values };
  });
  return { columns, rows };
}
