/**
 * JSON-lines readers for the built-in data (gzip-compressed or plain). Every malformed line is
 * reported with its file and line number; a file with malformed lines is refused as a whole
 * (up to 5 problems are listed) so a broken download never silently shrinks a data set.
 */
import { createReadStream, existsSync, statSync } from "node:fs";
import { createGunzip } from "node:zlib";
import type { Readable } from "node:stream";
import { DataError } from "../../util/errors.js";

export interface ImdbRecord {
  id: string;
  text: string;
  /** 1 positive, 0 negative; absent for unsup. */
  label?: 0 | 1;
  /** 1-10 stars; absent for unsup. */
  rating?: number;
}

/** Checks one parsed line; returns a problem description or the record. */
/** Checks one parsed record; `line` is its 1-based line in the file. Returns the record or a problem. */
export type RecordValidator<T> = (value: unknown, line: number) => T | string;

export function imdbValidator(labeled: boolean): RecordValidator<ImdbRecord> {
  return (v) => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) return "expected a JSON object";
    const o = v as Record<string, unknown>;
    if (typeof o.id !== "string" || o.id.length === 0) return "field \"id\" must be a non-empty string";
    if (typeof o.text !== "string") return "field \"text\" must be a string";
    if (!labeled) return { id: o.id, text: o.text };
    if (o.label !== 0 && o.label !== 1) return "field \"label\" must be 0 or 1";
    if (typeof o.rating !== "number" || !Number.isInteger(o.rating) || o.rating < 1 || o.rating > 10) {
      return "field \"rating\" must be an integer from 1 to 10";
    }
    return { id: o.id, text: o.text, label: o.label, rating: o.rating };
  };
}

function openBytes(file: string): Readable {
  const raw = createReadStream(file);
  if (!file.endsWith(".gz")) return raw;
  const gunzip = createGunzip();
  // pipe() does not forward errors: a read error of the file must end the stream we iterate.
  raw.on("error", (e) => gunzip.destroy(e));
  return raw.pipe(gunzip);
}

/** The lines of a byte stream, as bytes (split on \n, a trailing \r dropped), so each can be decoded strictly. */
async function* byteLines(stream: Readable): AsyncGenerator<Buffer> {
  let rest: Buffer = Buffer.alloc(0);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let buf = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    let nl: number;
    while ((nl = buf.indexOf(10)) >= 0) {
      const end = nl > 0 && buf[nl - 1] === 13 ? nl - 1 : nl;
      yield buf.subarray(0, end);
      buf = buf.subarray(nl + 1);
    }
    rest = Buffer.from(buf);
  }
  if (rest.length > 0) yield rest[rest.length - 1] === 13 ? rest.subarray(0, rest.length - 1) : rest;
}

/**
 * Reads every record of a JSON-lines file (UTF-8; blank lines are skipped). `limit` stops early.
 * Invalid UTF-8 is a problem of its line, as malformed JSON is; a file with no record at all is
 * refused (an empty download would otherwise surface later as a count error without a file name).
 */
export async function readJsonl<T>(file: string, validate: RecordValidator<T>, limit = Infinity): Promise<T[]> {
  if (!existsSync(file)) throw new DataError(`${file}: no such file; see \`dpalign data fetch --help\` or set --data-dir / DPALIGN_DATA_DIR`);
  const st = statSync(file);
  if (!st.isFile()) throw new DataError(`${file}: ${st.isDirectory() ? "is a directory" : "is not a regular file"}, not a JSON-lines file`);
  if (st.size === 0) throw new DataError(`${file}: the file is empty (0 bytes); fetch the data again (\`dpalign data fetch imdb\`)`);
  const out: T[] = [];
  const problems: string[] = [];
  let lineNo = 0;
  let records = 0;
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const stream = openBytes(file);
  try {
    for await (const bytes of byteLines(stream)) {
      lineNo++;
      let line: string;
      try {
        line = utf8.decode(bytes);
      } catch {
        problems.push(`${file}:${lineNo}: not valid UTF-8 (the data files are UTF-8 text)`);
        if (problems.length >= 5) break;
        continue;
      }
      if (line.trim() === "") continue;
      records++;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (e) {
        problems.push(`${file}:${lineNo}: not valid JSON (${(e as Error).message})`);
        if (problems.length >= 5) break;
        continue;
      }
      const r = validate(parsed, lineNo);
      if (typeof r === "string") {
        problems.push(`${file}:${lineNo}: ${r}`);
        if (problems.length >= 5) break;
        continue;
      }
      out.push(r);
      if (out.length >= limit) break;
    }
  } catch (e) {
    throw new DataError(`${file}:${lineNo + 1}: cannot read (${(e as Error).message}); the file may be truncated or not gzip`);
  } finally {
    stream.destroy();
  }
  if (problems.length > 0) {
    throw new DataError(`malformed data (${problems.length === 5 ? "first 5 problems" : `${problems.length} problem(s)`}):\n  ${problems.join("\n  ")}`);
  }
  if (records === 0) throw new DataError(`${file}: no records (the file holds no JSON lines); fetch the data again (\`dpalign data fetch imdb\`)`);
  return out;
}

/** Removes the `<br />` tags of the original reviews and collapses whitespace. */
export function cleanReview(text: string): string {
  return text.replace(/<br\s*\/?>/gi, " ").replace(/\s+/g, " ").trim();
}
