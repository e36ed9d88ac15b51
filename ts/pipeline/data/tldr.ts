/**
 * Reddit TL;DR (Völske et al. 2017) as filtered and labelled by OpenAI's summarize-from-feedback
 * release (Stiennon et al. 2020): the posts for SFT / PPO prompts and the human comparisons for the
 * reward model. Readers for the published JSON-lines formats, the TL;DR prompt, and the conversion
 * behind `dpalign data fetch tldr` (downloaded files in, the data-directory layout out; never the
 * network itself, see the CLI).
 *
 * Layout written into the data directory (`<data>/tldr/`), JSON lines, gzip-compressed:
 *   comparisons.jsonl.gz   the Reddit comparisons of the chosen batches (default TLDR_COMPARISON_BATCHES),
 *                          in batch order, each record as published (`info{id, post, title, subreddit}`,
 *                          `summaries[2]{text, policy, note}`, `choice`, `worker`, `batch`, `split`, `extra`);
 *                          CNN/DM comparisons (an `info.article`, no post) are left out and counted
 *   posts-train.jsonl.gz   tldr_3_filtered/train.jsonl: `id`, `subreddit`, `title`, `post`, `summary`
 *                          (as published, the summary trimmed)
 *   posts-valid.jsonl.gz   tldr_3_filtered/valid.jsonl
 *   posts-test.jsonl.gz    tldr_3_filtered/test.jsonl
 * The downloaded originals stay in `<data>/tldr/raw/{comparisons/<batch>.json, tldr_3_filtered/<split>.jsonl}`.
 */
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { DataError } from "../../util/errors.js";
import { readJsonl, type RecordValidator } from "./jsonl.js";

export const OPENAI_SFF_URL = "https://openaipublic.blob.core.windows.net/summarize-from-feedback";
/** Directory of the comparison batches: `<url>/<batch>.json`, one comparison per line. */
export const TLDR_COMPARISONS_URL = `${OPENAI_SFF_URL}/dataset/comparisons`;
/** Directory of the filtered TL;DR posts: `<url>/{train,valid,test}.jsonl`. */
export const TLDR_POSTS_URL = `${OPENAI_SFF_URL}/datasets/tldr_3_filtered`;

/**
 * The Reddit TL;DR comparison batches of the release (batch3 ... batch22, no batch21, and
 * edit_b2_eval_test). The release also holds CNN/DM comparisons (batch0_cnndm, cnndm0, cnndm2);
 * they can be named with --batches but their records are dropped (counted) by the conversion.
 */
export const TLDR_COMPARISON_BATCHES: readonly string[] = [
  ...Array.from({ length: 18 }, (_, i) => `batch${i + 3}`),
  "batch22",
  "edit_b2_eval_test",
];

export const TLDR_POST_SPLITS = ["train", "valid", "test"] as const;
export type TldrPostSplit = (typeof TLDR_POST_SPLITS)[number];

/** A filtered Reddit TL;DR post with its author's TL;DR (the SFT reference). */
export interface TldrPost {
  id: string;
  subreddit: string;
  title: string;
  post: string;
  /** The author's own summary, trimmed. */
  summary: string;
}

/** The fields a TL;DR prompt is built from (a TldrPost, or a comparison's `info`). */
export interface TldrQuery {
  subreddit: string;
  title: string;
  post: string;
}

/**
 * The TL;DR prompt, in the query format of Stiennon et al.:
 * "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:" (title and post trimmed; the
 * post's inner newlines are kept). It ends without a space: a summary is joined with one space.
 */
export function tldrPrompt(q: TldrQuery): string {
  return `SUBREDDIT: r/${q.subreddit}\nTITLE: ${q.title.trim()}\nPOST: ${q.post.trim()}\nTL;DR:`;
}

/** An SFT example: the prompt and the reference completion. */
export interface SftExample {
  id: string;
  prompt: string;
  reference: string;
}

/** A post as an SFT example (id `tldr/<post id>`, reference = the author's summary). */
export function tldrSftExample(p: TldrPost): SftExample {
  return { id: `tldr/${p.id}`, prompt: tldrPrompt(p), reference: p.summary };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The validator of a TL;DR posts file: every field a string, `id` non-empty and not repeated in
 * the file (a fresh validator per file). Returns the post with its summary trimmed.
 */
export function tldrPostValidator(): RecordValidator<TldrPost> {
  const seen = new Set<string>();
  return (v) => {
    if (!isObject(v)) return "expected a JSON object";
    if (typeof v.id !== "string" || v.id.length === 0) return 'field "id" must be a non-empty string';
    for (const k of ["subreddit", "title", "post", "summary"] as const) {
      if (typeof v[k] !== "string") return `field "${k}" must be a string`;
    }
    if (seen.has(v.id)) return `duplicate post id "${v.id}"`;
    seen.add(v.id);
    return { id: v.id, subreddit: v.subreddit as string, title: v.title as string, post: v.post as string, summary: (v.summary as string).trim() };
  };
}

/**
 * Reads a filtered TL;DR posts file (`.jsonl` or `.jsonl.gz`). A malformed record refuses the
 * file, naming file and line (readJsonl). `limit` stops after that many posts.
 */
export async function loadTldrPosts(file: string, opts: { limit?: number } = {}): Promise<TldrPost[]> {
  return readJsonl(file, tldrPostValidator(), opts.limit ?? Infinity);
}

export interface OpenAiSummary {
  text: string;
  policy?: string;
  note?: string | null;
}

/** One summarize-from-feedback comparison on a Reddit post, as published. */
export interface OpenAiComparison {
  info: { id: string; post: string; title: string; subreddit: string };
  summaries: [OpenAiSummary, OpenAiSummary];
  /** Index (0 or 1) of the summary the labeller preferred. */
  choice: 0 | 1;
  worker?: string;
  batch?: string;
  split?: string;
}

/** A checked comparison: a Reddit one, or another kind of the release (a CNN/DM article) to leave out. */
export type CheckedComparison =
  | { kind: "reddit"; comparison: OpenAiComparison; raw: Record<string, unknown> }
  | { kind: "other"; detail: string };

function optString(o: Record<string, unknown>, k: string): string | undefined | false {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  return typeof v === "string" ? v : false;
}

/**
 * Checks one published comparison record: a problem description (a malformed record), or the
 * comparison. A record whose `info` holds an `article` and no `post` is a CNN/DM comparison:
 * well-formed, but not Reddit TL;DR ("other").
 */
export function checkOpenAiComparison(v: unknown): CheckedComparison | string {
  if (!isObject(v)) return "expected a JSON object";
  const info = v.info;
  if (!isObject(info)) return 'field "info" must be an object';
  if (typeof info.id !== "string" || info.id.length === 0) return 'field "info.id" must be a non-empty string';
  const meta: Partial<Record<"worker" | "batch" | "split", string>> = {};
  for (const k of ["worker", "batch", "split"] as const) {
    const s = optString(v, k);
    if (s === false) return `field "${k}" must be a string`;
    if (s !== undefined) meta[k] = s;
  }
  if (typeof info.post !== "string") {
    if (typeof info.article === "string") {
      return { kind: "other", detail: `a CNN/DM article comparison${meta.batch ? ` (batch ${meta.batch})` : ""}, not a Reddit TL;DR post` };
    }
    return 'field "info.post" must be a string';
  }
  if (typeof info.title !== "string") return 'field "info.title" must be a string';
  if (typeof info.subreddit !== "string") return 'field "info.subreddit" must be a string';
  const s = v.summaries;
  if (!Array.isArray(s) || s.length !== 2) return 'field "summaries" must be a list of two summaries';
  const summaries: OpenAiSummary[] = [];
  for (let i = 0; i < 2; i++) {
    const x: unknown = s[i];
    if (!isObject(x) || typeof x.text !== "string") return `field "summaries[${i}].text" must be a string`;
    const policy = optString(x, "policy");
    if (policy === false) return `field "summaries[${i}].policy" must be a string`;
    const note = optString(x, "note");
    if (note === false) return `field "summaries[${i}].note" must be a string or null`;
    summaries.push({ text: x.text, ...(policy !== undefined ? { policy } : {}), note: note ?? null });
  }
  if (v.choice !== 0 && v.choice !== 1) return 'field "choice" must be 0 or 1 (the index of the preferred summary)';
  return {
    kind: "reddit",
    comparison: {
      info: { id: info.id, post: info.post, title: info.title, subreddit: info.subreddit },
      summaries: summaries as [OpenAiSummary, OpenAiSummary],
      choice: v.choice,
      ...meta,
    },
    raw: v,
  };
}

export interface TldrSources {
  /** Base URL of the comparison batches (default TLDR_COMPARISONS_URL). */
  comparisonsUrl?: string;
  /** Base URL of the filtered posts (default TLDR_POSTS_URL). */
  postsUrl?: string;
  /** Comparison batches (default TLDR_COMPARISON_BATCHES). */
  batches?: readonly string[];
}

/** The raw files `dpalign data fetch tldr` needs in `rawDir`, and where each is published. */
export function tldrDownloads(rawDir: string, src: TldrSources = {}): { url: string; dest: string }[] {
  const cUrl = (src.comparisonsUrl ?? TLDR_COMPARISONS_URL).replace(/\/+$/, "");
  const pUrl = (src.postsUrl ?? TLDR_POSTS_URL).replace(/\/+$/, "");
  const batches = src.batches ?? TLDR_COMPARISON_BATCHES;
  for (const b of batches) {
    if (!/^[A-Za-z0-9_.-]+$/.test(b) || b.startsWith(".")) throw new DataError(`comparison batch name "${b}": use a file name such as batch3 (letters, digits, _ . -)`);
  }
  return [
    ...batches.map((b) => ({ url: `${cUrl}/${b}.json`, dest: join(rawDir, "comparisons", `${b}.json`) })),
    ...TLDR_POST_SPLITS.map((s) => ({ url: `${pUrl}/${s}.jsonl`, dest: join(rawDir, "tldr_3_filtered", `${s}.jsonl`) })),
  ];
}

export interface TldrCounts {
  /** Reddit comparisons written to comparisons.jsonl.gz. */
  comparisons: number;
  /** CNN/DM (non-Reddit) comparisons left out. */
  otherComparisons: number;
  posts: Record<TldrPostSplit, number>;
}

async function writeJsonlGz(dest: string, lines: AsyncIterable<string>): Promise<void> {
  const tmp = `${dest}.partial`;
  try {
    await pipeline(Readable.from(lines), createGzip(), createWriteStream(tmp));
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  renameSync(tmp, dest);
}

/**
 * Converts the downloaded release in `rawDir` (the layout of tldrDownloads) into
 * `<outDir>/tldr/{comparisons,posts-train,posts-valid,posts-test}.jsonl.gz`. Every record is
 * checked; a malformed one refuses the conversion naming the raw file and line, so a broken
 * download never silently shrinks the data. Returns the counts.
 */
export async function convertTldr(rawDir: string, outDir: string, src: Pick<TldrSources, "batches"> = {}): Promise<TldrCounts> {
  const files = tldrDownloads(rawDir, src).map((d) => d.dest);
  const missing = files.filter((f) => !existsSync(f) || !statSync(f).isFile());
  if (missing.length > 0) throw new DataError(`missing downloaded file(s): ${missing.join(", ")}; run \`dpalign data fetch tldr\` with network access, or put them there by hand`);
  const dir = join(outDir, "tldr");
  mkdirSync(dir, { recursive: true });
  const batchFiles = files.filter((f) => f.endsWith(".json"));
  const counts: TldrCounts = { comparisons: 0, otherComparisons: 0, posts: { train: 0, valid: 0, test: 0 } };
  await writeJsonlGz(join(dir, "comparisons.jsonl.gz"), (async function* () {
    for (const f of batchFiles) {
      const recs = await readJsonl(f, checkOpenAiComparison);
      for (const r of recs) {
        if (r.kind === "other") {
          counts.otherComparisons++;
          continue;
        }
        counts.comparisons++;
        yield JSON.stringify(r.raw) + "\n";
      }
    }
  })());
  if (counts.comparisons === 0) throw new DataError(`no Reddit TL;DR comparisons in ${batchFiles.map((f) => basename(f)).join(", ")} (only ${counts.otherComparisons} CNN/DM ones)`);
  for (const split of TLDR_POST_SPLITS) {
    const posts = await loadTldrPosts(join(rawDir, "tldr_3_filtered", `${split}.jsonl`));
    counts.posts[split] = posts.length;
    await writeJsonlGz(join(dir, `posts-${split}.jsonl.gz`), (async function* () {
      for (const p of posts) yield JSON.stringify(p) + "\n";
    })());
  }
  return counts;
}
