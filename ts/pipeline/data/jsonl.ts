/**
 * JSON-lines readers for the built-in data (gzip-compressed or plain). Every malformed line is
 * reported with its file and line number; a file with malformed lines is refused as a whole
 * (up to 5 problems are listed) so a broken download never silently shrinks a data set.
 */
import { createReadStream, existsSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { createInterface } from "node:readline";
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
export type RecordValidator<T> = (value: unknown) => T | string;

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

function openLines(file: string): Readable {
  const raw = createReadStream(file);
  return file.endsWith(".gz") ? raw.pipe(createGunzip()) : raw;
}

/** Reads every record of a JSON-lines file (blank lines are skipped). `limit` stops early. */
export async function readJsonl<T>(file: string, validate: RecordValidator<T>, limit = Infinity): Promise<T[]> {
  if (!existsSync(file)) throw new DataError(`${file}: no such file; see \`dpalign data fetch --help\` or set --data-dir / DPALIGN_DATA_DIR`);
  const out: T[] = [];
  const problems: string[] = [];
  let lineNo = 0;
  const stream = openLines(file);
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    for await (const line of rl) {
      lineNo++;
      if (line.trim() === "") continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch (e) {
        problems.push(`${file}:${lineNo}: not valid JSON (${(e as Error).message})`);
        if (problems.length >= 5) break;
        continue;
      }
      const r = validate(parsed);
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
    rl.close();
    stream.destroy();
  }
  if (problems.length > 0) {
    throw new DataError(`malformed data (${problems.length === 5 ? "first 5 problems" : `${problems.length} problem(s)`}):\n  ${problems.join("\n  ")}`);
  }
  return out;
}

/** Removes the `<br />` tags of the original reviews and collapses whitespace. */
export function cleanReview(text: string): string {
  return text.replace(/<br\s*\/?>/gi, " ").replace(/\s+/g, " ").trim();
}
