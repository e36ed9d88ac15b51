/**
 * `dpalign data fetch imdb`: downloads the original archive (aclImdb_v1.tar.gz, Stanford AI Lab)
 * and converts it into the JSON-lines format of ../shared/data/imdb (see its README).
 */
import { createWriteStream, existsSync, mkdirSync, renameSync } from "node:fs";
import { once } from "node:events";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { DataError } from "../../util/errors.js";
import { readTar } from "./tar.js";
import type { ImdbRecord } from "./jsonl.js";

export const IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz";

const ENTRY = /(?:^|\/)(train|test)\/(pos|neg|unsup)\/(\d+)_(\d+)\.txt$/;

interface Parsed { dir: "train" | "test"; split: "train" | "test" | "unsup"; label: "pos" | "neg" | "unsup"; index: number; rating: number; text: string }

/** Reviews per split (and label) in aclImdb_v1.tar.gz (Maas et al. 2011). */
export const IMDB_COUNTS = {
  train: { pos: 12500, neg: 12500 },
  test: { pos: 12500, neg: 12500 },
  unsup: { unsup: 50000 },
} as const;

/** Options of `convertImdbArchive`. */
export interface ConvertOptions {
  /**
   * Accept an archive with other counts than IMDB_COUNTS (small test archives). Off by default:
   * a partial or foreign archive would silently shrink every experiment run on it.
   */
  readonly allowPartial?: boolean;
}

/** Counts found per split and label, checked against IMDB_COUNTS; a DataError says what was found. */
function checkCounts(archive: string, found: readonly Parsed[]): void {
  const problems: string[] = [];
  const got: string[] = [];
  for (const [split, labels] of Object.entries(IMDB_COUNTS)) {
    const parts: string[] = [];
    for (const [label, want] of Object.entries(labels)) {
      const n = found.filter((p) => p.split === split && p.label === label).length;
      parts.push(label === "unsup" ? `${n}` : `${n} ${label}`);
      if (n !== want) problems.push(`${split}${label === "unsup" ? "" : `/${label}`} ${n} (expected ${want})`);
    }
    got.push(`${split} ${parts.join(" + ")}`);
  }
  if (problems.length > 0) {
    throw new DataError(
      `${archive}: not the complete IMDb archive (aclImdb_v1.tar.gz): found ${got.join(", ")}; expected train 12500 pos + 12500 neg, test 12500 pos + 12500 neg, unsup 50000. Download it again (remove the file, or drop --archive).`,
    );
  }
}

/**
 * Converts an archive into `<outDir>/imdb/{train,test,unsup}.jsonl.gz`; returns record counts.
 * The archive must hold exactly IMDB_COUNTS reviews unless `opts.allowPartial`.
 */
export async function convertImdbArchive(archive: string, outDir: string, opts: ConvertOptions = {}): Promise<Record<string, number>> {
  const found: Parsed[] = [];
  await readTar(archive, (e) => {
    if (e.type !== "file") return;
    const m = ENTRY.exec(e.name);
    if (!m) return;
    const label = m[2] as Parsed["label"];
    const split = label === "unsup" ? "unsup" : (m[1] as "train" | "test");
    found.push({ dir: m[1] as "train" | "test", split, label, index: Number(m[3]), rating: Number(m[4]), text: e.data.toString("utf8") });
  });
  if (found.length === 0) throw new DataError(`${archive}: no review files (<split>/<pos|neg|unsup>/<index>_<rating>.txt) in the archive`);
  if (!opts.allowPartial) checkCounts(archive, found);
  const order = { pos: 0, neg: 1, unsup: 2 } as const;
  found.sort((a, b) => order[a.label] - order[b.label] || a.index - b.index);
  const dir = join(outDir, "imdb");
  mkdirSync(dir, { recursive: true });
  const counts: Record<string, number> = {};
  for (const split of ["train", "test", "unsup"] as const) {
    const recs = found.filter((p) => p.split === split);
    counts[split] = recs.length;
    if (recs.length === 0) continue;
    const lines = recs.map((p) => {
      // ids as in ../shared/data/imdb: <directory in the archive>/<pos|neg|unsup>/<index> (unsup lives in train/).
      const r: ImdbRecord = { id: `${p.dir}/${p.label}/${p.index}`, text: p.text };
      if (p.label !== "unsup") {
        r.label = p.label === "pos" ? 1 : 0;
        r.rating = p.rating;
      }
      return JSON.stringify(r) + "\n";
    });
    const tmp = join(dir, `${split}.jsonl.gz.partial`);
    await pipeline(Readable.from(lines), createGzip(), createWriteStream(tmp));
    renameSync(tmp, join(dir, `${split}.jsonl.gz`));
  }
  return counts;
}

/**
 * Downloads `url` to `dest` (skipped when `dest` exists), reporting progress in bytes. `byHand`
 * ends the message of a failed connection (what to do instead; default: for the IMDb archive).
 */
export async function download(
  url: string,
  dest: string,
  onProgress?: (got: number, total: number) => void,
  byHand = "fetch it by hand and pass --archive",
): Promise<void> {
  if (existsSync(dest)) return;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new DataError(`cannot download ${url} (${(e as Error).message}); check the network or ${byHand}`);
  }
  if (!res.ok || !res.body) throw new DataError(`cannot download ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get("content-length") ?? 0);
  const tmp = `${dest}.partial`;
  const out = createWriteStream(tmp);
  let got = 0;
  for await (const chunk of Readable.fromWeb(res.body as never)) {
    got += (chunk as Buffer).length;
    onProgress?.(got, total);
    if (!out.write(chunk)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
  renameSync(tmp, dest);
}
