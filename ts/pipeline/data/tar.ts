/**
 * A small streaming reader for (gzip-compressed) ustar/GNU tar archives: enough for the IMDb
 * archive (regular files, ustar prefixes, GNU long names, pax headers are skipped).
 */
import { createReadStream, statSync } from "node:fs";
import { createGunzip } from "node:zlib";
import { DataError } from "../../util/errors.js";

export interface TarEntry {
  name: string;
  type: "file" | "dir" | "other";
  data: Buffer;
}

function str(b: Buffer, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const nul = s.indexOf(0);
  return (nul >= 0 ? s.subarray(0, nul) : s).toString("utf8");
}

function octal(b: Buffer, start: number, len: number): number {
  const s = str(b, start, len).trim();
  return s === "" ? 0 : parseInt(s, 8);
}

/** Calls `onEntry` for every entry of the archive at `file` (gzip when it ends in .gz/.tgz). */
export async function readTar(file: string, onEntry: (e: TarEntry) => void): Promise<number> {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new DataError(`${file}: ${st.isDirectory() ? "is a directory" : "is not a regular file"}, not a tar archive`);
    size = st.size;
  } catch (e) {
    if (e instanceof DataError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new DataError(`${file}: ${code === "ENOENT" ? "no such file" : `cannot read the archive (${code ?? (e as Error).message})`}`);
  }
  if (size === 0) throw new DataError(`${file}: the archive is empty (0 bytes)`);
  const input = createReadStream(file);
  let stream: NodeJS.ReadableStream = input;
  if (/\.(t?gz)$/.test(file)) {
    const gunzip = createGunzip();
    // pipe() does not forward errors: a read error of the file must end the gunzip stream we iterate.
    input.on("error", (e) => gunzip.destroy(e));
    stream = input.pipe(gunzip);
  }
  let buf: Buffer = Buffer.alloc(0);
  let count = 0;
  let longName: string | null = null;
  let done = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      for (;;) {
        if (done || buf.length < 512) break;
        const header = buf.subarray(0, 512);
        if (header.every((x) => x === 0)) {
          done = true;
          break;
        }
        const size = octal(header, 124, 12);
        const padded = Math.ceil(size / 512) * 512;
        if (buf.length < 512 + padded) break;
        const typeflag = String.fromCharCode(header[156] || 48);
        const data = Buffer.from(buf.subarray(512, 512 + size));
        buf = buf.subarray(512 + padded);
        if (typeflag === "L") {
          longName = str(data, 0, data.length);
          continue;
        }
        if (typeflag === "x" || typeflag === "g") continue;
        const prefix = str(header, 345, 155);
        const name = longName ?? (prefix ? `${prefix}/${str(header, 0, 100)}` : str(header, 0, 100));
        longName = null;
        const type = typeflag === "0" || typeflag === "\0" ? "file" : typeflag === "5" ? "dir" : "other";
        onEntry({ name, type, data });
        count++;
      }
      if (done) break;
    }
  } catch (e) {
    throw new DataError(`${file}: cannot read the archive (${(e as Error).message})`);
  } finally {
    input.destroy();
  }
  if (!done && buf.length > 0) throw new DataError(`${file}: the archive is truncated (${buf.length} stray bytes at the end)`);
  return count;
}
