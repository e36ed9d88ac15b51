import { describe, expect, it } from "vitest";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import {
  describeSkips,
  fileStem,
  loadHhRlhf,
  loadOpenAiComparisons,
  loadPreferenceJsonl,
  loadPreferences,
  pairText,
  splitHhTranscripts,
} from "../../../ts/pipeline/data/preferences.js";
import {
  convertTldr,
  loadTldrPosts,
  tldrDownloads,
  tldrPrompt,
  tldrSftExample,
  TLDR_COMPARISON_BATCHES,
} from "../../../ts/pipeline/data/tldr.js";
import { readJsonl } from "../../../ts/pipeline/data/jsonl.js";
import { DEFAULT_DATA_DIRS } from "../../../ts/pipeline/data/dir.js";
import { DataError } from "../../../ts/util/errors.js";
import { tmpDir } from "./helpers.js";

const H = "\n\nHuman:";
const A = "\n\nAssistant:";

/** Writes JSON lines (objects are serialised, strings written as they are); gzip for .gz names. */
function writeLines(file: string, lines: readonly unknown[]): string {
  const text = lines.map((l) => (typeof l === "string" ? l : JSON.stringify(l))).join("\n") + "\n";
  writeFileSync(file, file.endsWith(".gz") ? gzipSync(text) : text);
  return file;
}

async function dataError(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(DataError);
  return (e as Error).message;
}

describe("HH-RLHF transcripts: the shared prompt and the two final responses", () => {
  const prefix = `${H} Hi there${A} Hello! How can I help?${H} How do I bake bread?${A}`;

  it("splits a multi-turn pair after the last Assistant turn, keeping earlier turns in the prompt", () => {
    const s = splitHhTranscripts(`${prefix}  Mix flour, water and yeast. \n`, `${prefix} I can't help with that.`);
    expect(s).toEqual({ prompt: prefix, chosen: "Mix flour, water and yeast.", rejected: "I can't help with that." });
    if ("reason" in s) throw new Error("unreachable");
    expect(pairText(s.prompt, s.chosen)).toBe(`${prefix} Mix flour, water and yeast.`);
  });

  it("splits a single-turn pair and keeps an empty response", () => {
    expect(splitHhTranscripts(`${H} q${A} yes`, `${H} q${A}`)).toEqual({ prompt: `${H} q${A}`, chosen: "yes", rejected: "" });
  });

  it("names pairs that are not a usable pair", () => {
    expect(splitHhTranscripts(`${H} q only`, `${H} q${A} a`)).toMatchObject({ reason: "no-assistant-turn", detail: expect.stringMatching(/chosen transcript has no/) });
    expect(splitHhTranscripts(`${H} q${A} a`, "no turns")).toMatchObject({ reason: "no-assistant-turn", detail: expect.stringMatching(/rejected transcript has no/) });
    // An earlier turn differs.
    expect(splitHhTranscripts(`${H} Hi${A} Hello!${H} q${A} a`, `${H} Hi${A} Hey!${H} q${A} b`)).toMatchObject({
      reason: "no-shared-prefix",
      detail: expect.stringMatching(/differ from character/),
    });
    // One transcript goes on for more turns (as in the real data).
    expect(splitHhTranscripts(`${H} q${A} a${H} more?${A} c`, `${H} q${A} b`)).toMatchObject({
      reason: "no-shared-prefix",
      detail: expect.stringMatching(/the chosen transcript has more turns/),
    });
    expect(splitHhTranscripts(`${H} q${A} same `, `${H} q${A}same`)).toMatchObject({ reason: "identical-responses" });
    expect(splitHhTranscripts(`${A} a`, `${A} b`)).toMatchObject({ reason: "no-human-turn" });
  });
});

describe("loadHhRlhf", () => {
  const ok = (q: string, c: string, r: string) => ({ chosen: `${H} ${q}${A} ${c}`, rejected: `${H} ${q}${A} ${r}` });

  it("loads pairs with ids hh-rlhf/<stem>/<line> and skips (counts, by file and line) the unusable ones", async () => {
    const f = writeLines(join(tmpDir(), "harmless-mini.jsonl.gz"), [
      ok("q1", "good", "bad"),
      { chosen: `${H} q${A} a${H} more${A} c`, rejected: `${H} q${A} b` },
      ok("q3", "same", "same"),
      { chosen: `${H} q4 no answer`, rejected: `${H} q4${A} x` },
      { ...ok("q5", "fine", "rude"), extra: 1 },
    ]);
    const l = await loadHhRlhf(f);
    expect(l.pairs).toEqual([
      { id: "hh-rlhf/harmless-mini/1", prompt: `${H} q1${A}`, chosen: "good", rejected: "bad", source: "hh-rlhf" },
      { id: "hh-rlhf/harmless-mini/5", prompt: `${H} q5${A}`, chosen: "fine", rejected: "rude", source: "hh-rlhf" },
    ]);
    expect(l.skipped.map((s) => [s.file, s.line, s.reason])).toEqual([
      [f, 2, "no-shared-prefix"],
      [f, 3, "identical-responses"],
      [f, 4, "no-assistant-turn"],
    ]);
    expect(describeSkips(l)).toBe(`${f}: 2 pairs; 3 records skipped (1 no-shared-prefix: line 2; 1 identical-responses: line 3; 1 no-assistant-turn: line 4)`);
    // strict: the same records refuse the file, by file and line.
    const msg = await dataError(loadHhRlhf(f, { strict: true }));
    expect(msg).toContain(`${f}:2: no-shared-prefix: `);
    expect(msg).toContain(`${f}:3: identical-responses: `);
    expect(msg).toContain(`${f}:4: no-assistant-turn: `);
    expect(msg).not.toContain(`${f}:1:`);
  });

  it("reads plain .jsonl, stops at limit and reports nothing skipped", async () => {
    const f = writeLines(join(tmpDir(), "plain.jsonl"), [ok("a", "x", "y"), ok("b", "x", "y"), ok("c", "x", "y")]);
    const l = await loadHhRlhf(f, { limit: 2 });
    expect(l.pairs.map((p) => p.id)).toEqual(["hh-rlhf/plain/1", "hh-rlhf/plain/2"]);
    expect(describeSkips(l)).toBe(`${f}: 2 pairs; no record skipped`);
  });

  it("refuses malformed records by file and line", async () => {
    const f = writeLines(join(tmpDir(), "bad.jsonl.gz"), [
      ok("q", "a", "b"),
      "{not json",
      { chosen: `${H} q${A} a` },
      { chosen: 3, rejected: "x" },
      "[1]",
    ]);
    const msg = await dataError(loadHhRlhf(f));
    expect(msg).toContain(`${f}:2: not valid JSON`);
    expect(msg).toContain(`${f}:3: field "rejected" must be a string`);
    expect(msg).toContain(`${f}:4: field "chosen" must be a string`);
    expect(msg).toContain(`${f}:5: expected a JSON object`);
  });

  it("refuses invalid UTF-8 and a corrupt gzip, naming the file", async () => {
    const dir = tmpDir();
    const latin = join(dir, "latin1.jsonl.gz");
    writeFileSync(latin, gzipSync(Buffer.concat([
      Buffer.from(JSON.stringify(ok("q", "a", "b")) + "\n"),
      Buffer.from(JSON.stringify(ok("caf\u00e9", "a", "b")) + "\n", "latin1"),
    ])));
    expect(await dataError(loadHhRlhf(latin))).toContain(`${latin}:2: not valid UTF-8`);
    const corrupt = join(dir, "corrupt.jsonl.gz");
    writeFileSync(corrupt, "not gzip");
    expect(await dataError(loadHhRlhf(corrupt))).toContain(corrupt);
  });
});

describe("loadOpenAiComparisons (summarize-from-feedback)", () => {
  const info = { id: "t3_abc", post: "  My landlord kept my deposit.\n\nWhat can I do?  ", title: "Deposit question", subreddit: "legaladvice" };
  const cmp = (choice: number, a: string, b: string, extra: Record<string, unknown> = {}) => ({
    info,
    summaries: [{ text: a, policy: "sup4_ppo_rm3_kl10", note: null }, { text: b, policy: "ref", note: "ok" }],
    choice,
    worker: "w1",
    batch: "batch9",
    split: "train",
    extra: { confidence: 8 },
    ...extra,
  });
  const prompt = "SUBREDDIT: r/legaladvice\nTITLE: Deposit question\nPOST: My landlord kept my deposit.\n\nWhat can I do?\nTL;DR:";

  it("builds the TL;DR prompt and takes summaries[choice] as chosen", async () => {
    expect(tldrPrompt(info)).toBe(prompt);
    const f = writeLines(join(tmpDir(), "batch9.json"), [
      cmp(1, " landlord bad", " kept my deposit, what now?"),
      cmp(0, " first wins", " second loses"),
      { info: { id: "cnn1", article: "News text", title: "T", site: "dailymail" }, summaries: [{ text: "a" }, { text: "b" }], choice: 0, batch: "cnndm0", split: "valid2" },
      cmp(0, " same text", "same text "),
    ]);
    const l = await loadOpenAiComparisons(f);
    expect(l.pairs).toEqual([
      { id: "openai-sff/batch9/1", prompt, chosen: "kept my deposit, what now?", rejected: "landlord bad", source: "openai-sff", postId: "t3_abc", split: "train", batch: "batch9", worker: "w1" },
      { id: "openai-sff/batch9/2", prompt, chosen: "first wins", rejected: "second loses", source: "openai-sff", postId: "t3_abc", split: "train", batch: "batch9", worker: "w1" },
    ]);
    expect(l.skipped.map((s) => [s.file, s.line, s.reason])).toEqual([[f, 3, "not-reddit"], [f, 4, "identical-responses"]]);
    expect(l.skipped[0].detail).toMatch(/CNN\/DM article comparison \(batch cnndm0\)/);
    expect(pairText(l.pairs[0].prompt, l.pairs[0].chosen)).toBe(`${prompt} kept my deposit, what now?`);
    expect(await dataError(loadOpenAiComparisons(f, { strict: true }))).toMatch(new RegExp(`${f}:3: not-reddit: [^\\n]*\\n\\s+${f}:4: identical-responses`));
  });

  it("refuses malformed comparisons by file and line", async () => {
    const f = writeLines(join(tmpDir(), "bad.jsonl"), [
      cmp(0, "a", "b"),
      cmp(2, "a", "b"),
      { ...cmp(0, "a", "b"), summaries: [{ text: "only one" }] },
      { ...cmp(0, "a", "b"), info: { id: "t3_x", title: "t", subreddit: "s" } },
      { ...cmp(0, "a", "b"), summaries: [{ text: "a" }, { text: 5 }] },
      { ...cmp(0, "a", "b"), info: undefined },
    ]);
    const msg = await dataError(loadOpenAiComparisons(f));
    expect(msg).toContain(`${f}:2: field "choice" must be 0 or 1`);
    expect(msg).toContain(`${f}:3: field "summaries" must be a list of two summaries`);
    expect(msg).toContain(`${f}:4: field "info.post" must be a string`);
    expect(msg).toContain(`${f}:5: field "summaries[1].text" must be a string`);
    expect(msg).toContain(`${f}:6: field "info" must be an object`);
    const more = writeLines(join(tmpDir(), "more.jsonl"), [{ ...cmp(0, "a", "b"), worker: 7 }, { ...cmp(0, "a", "b"), info: { ...info, subreddit: null } }]);
    const m2 = await dataError(loadOpenAiComparisons(more));
    expect(m2).toContain(`${more}:1: field "worker" must be a string`);
    expect(m2).toContain(`${more}:2: field "info.subreddit" must be a string`);
  });
});

describe("loadPreferenceJsonl (generic {prompt, chosen, rejected})", () => {
  it("loads records with and without ids, keeps the prompt verbatim and a reference", async () => {
    const f = writeLines(join(tmpDir(), "trl.jsonl.gz"), [
      { prompt: "The sky is", chosen: " blue.", rejected: " green." },
      { id: "p-2", prompt: "Q: 2+2?\nA:", chosen: "4", rejected: "5", reference: "4" },
      { prompt: "x", chosen: "same", rejected: " same" },
      "",
    ]);
    const l = await loadPreferenceJsonl(f);
    expect(l.pairs).toEqual([
      { id: "jsonl/trl/1", prompt: "The sky is", chosen: "blue.", rejected: "green.", source: "jsonl" },
      { id: "p-2", prompt: "Q: 2+2?\nA:", chosen: "4", rejected: "5", reference: "4", source: "jsonl" },
    ]);
    expect(l.skipped.map((s) => [s.line, s.reason])).toEqual([[3, "identical-responses"]]);
    expect(pairText(l.pairs[0].prompt, l.pairs[0].chosen)).toBe("The sky is blue.");
    expect(pairText("Prompt:\n", "answer")).toBe("Prompt:\nanswer");
    expect((await loadPreferences("jsonl", f)).pairs).toHaveLength(2);
  });

  it("refuses malformed records by file and line", async () => {
    const f = writeLines(join(tmpDir(), "bad.jsonl"), [
      { id: "a", prompt: "p", chosen: "c", rejected: "r" },
      { chosen: "c", rejected: "r" },
      { prompt: [{ role: "user", content: "hi" }], chosen: [{ role: "assistant", content: "c" }], rejected: [] },
      { prompt: "p", chosen: 1, rejected: "r" },
      { id: "a", prompt: "p", chosen: "c", rejected: "r" },
      { id: "", prompt: "p", chosen: "c", rejected: "r" },
    ]);
    const msg = await dataError(loadPreferenceJsonl(f));
    expect(msg).toContain(`${f}:2: field "prompt" is missing`);
    expect(msg).toContain(`${f}:3: field "prompt" is a list of messages (TRL's conversational format)`);
    expect(msg).toContain(`${f}:4: field "chosen" must be a string`);
    expect(msg).toContain(`${f}:5: duplicate id "a" (first on line 1)`);
    const f2 = writeLines(join(tmpDir(), "bad2.jsonl"), [{ id: "", prompt: "p", chosen: "c", rejected: "r" }, { prompt: "p", chosen: "c", rejected: "r", reference: 3 }]);
    const m2 = await dataError(loadPreferenceJsonl(f2));
    expect(m2).toContain(`${f2}:1: field "id" must be a non-empty string`);
    expect(m2).toContain(`${f2}:2: field "reference" must be a string`);
  });

  it("file stems", () => {
    expect(["a/b/x.jsonl.gz", "x.jsonl", "x.json", "x.json.gz", "x.txt"].map(fileStem)).toEqual(["x", "x", "x", "x", "x.txt"]);
  });
});

describe("TL;DR posts", () => {
  const post = { id: "t3_1", subreddit: "relationships", title: "Title ", post: "Body\ntext", summary: " short summary " };

  it("loads posts and makes SFT examples (reference = summary)", async () => {
    const f = writeLines(join(tmpDir(), "posts-train.jsonl.gz"), [post, { ...post, id: "t3_2" }]);
    const posts = await loadTldrPosts(f);
    expect(posts[0]).toEqual({ ...post, summary: "short summary" });
    expect(tldrSftExample(posts[0])).toEqual({
      id: "tldr/t3_1",
      prompt: "SUBREDDIT: r/relationships\nTITLE: Title\nPOST: Body\ntext\nTL;DR:",
      reference: "short summary",
    });
    expect(await loadTldrPosts(f, { limit: 1 })).toHaveLength(1);
  });

  it("refuses malformed posts by file and line", async () => {
    const f = writeLines(join(tmpDir(), "bad.jsonl"), [post, { ...post, id: "t3_2", summary: undefined }, post, { ...post, id: 5 }]);
    const msg = await dataError(loadTldrPosts(f));
    expect(msg).toContain(`${f}:2: field "summary" must be a string`);
    expect(msg).toContain(`${f}:3: duplicate post id "t3_1"`);
    expect(msg).toContain(`${f}:4: field "id" must be a non-empty string`);
  });
});

describe("data fetch tldr: download list and conversion (no network)", () => {
  it("lists the published files (flags override URLs and batches)", () => {
    const d = tldrDownloads("/raw");
    expect(TLDR_COMPARISON_BATCHES).toHaveLength(20);
    expect(TLDR_COMPARISON_BATCHES).not.toContain("batch21");
    expect(d).toHaveLength(23);
    expect(d[0]).toEqual({ url: "https://openaipublic.blob.core.windows.net/summarize-from-feedback/dataset/comparisons/batch3.json", dest: "/raw/comparisons/batch3.json" });
    expect(d.map((x) => x.url)).toContain("https://openaipublic.blob.core.windows.net/summarize-from-feedback/dataset/comparisons/edit_b2_eval_test.json");
    expect(d.at(-3)).toEqual({ url: "https://openaipublic.blob.core.windows.net/summarize-from-feedback/datasets/tldr_3_filtered/train.jsonl", dest: "/raw/tldr_3_filtered/train.jsonl" });
    expect(tldrDownloads("/r", { batches: ["b1"], comparisonsUrl: "http://m/c/", postsUrl: "http://m/p" }).map((x) => x.url)).toEqual([
      "http://m/c/b1.json", "http://m/p/train.jsonl", "http://m/p/valid.jsonl", "http://m/p/test.jsonl",
    ]);
    expect(() => tldrDownloads("/r", { batches: ["../etc"] })).toThrow(/batch name/);
  });

  function writeRaw(raw: string, batch3: unknown[]): void {
    mkdirSync(join(raw, "comparisons"), { recursive: true });
    mkdirSync(join(raw, "tldr_3_filtered"), { recursive: true });
    const info = { id: "t3_p", post: "post", title: "title", subreddit: "sub" };
    const c = (choice: number) => ({ info, summaries: [{ text: " a", policy: "p", note: null }, { text: " b", policy: "ref", note: null }], choice, worker: "w", batch: "batch3", split: "train", extra: {} });
    writeLines(join(raw, "comparisons", "batch3.json"), batch3.length ? batch3 : [c(0), c(1)]);
    writeLines(join(raw, "comparisons", "cnndm0.json"), [
      { info: { id: "x", article: "news", title: "t", site: "cnn" }, summaries: [{ text: "a" }, { text: "b" }], choice: 0, batch: "cnndm0", split: "valid1" },
      { ...c(1), batch: "cnndm0" },
    ]);
    for (const [i, s] of ["train", "valid", "test"].entries()) {
      writeLines(join(raw, "tldr_3_filtered", `${s}.jsonl`), Array.from({ length: i + 1 }, (_, k) => ({ id: `${s}${k}`, subreddit: "sub", title: "t", post: "p", summary: " s" })));
    }
  }

  it("converts downloaded files into <out>/tldr/ and the loaders read the result", async () => {
    const dir = tmpDir();
    const raw = join(dir, "raw");
    writeRaw(raw, []);
    const out = join(dir, "data");
    const counts = await convertTldr(raw, out, { batches: ["batch3", "cnndm0"] });
    expect(counts).toEqual({ comparisons: 3, otherComparisons: 1, posts: { train: 1, valid: 2, test: 3 } });
    const l = await loadOpenAiComparisons(join(out, "tldr", "comparisons.jsonl.gz"));
    expect(l.skipped).toEqual([]);
    expect(l.pairs.map((p) => [p.id, p.chosen, p.batch])).toEqual([
      ["openai-sff/comparisons/1", "a", "batch3"],
      ["openai-sff/comparisons/2", "b", "batch3"],
      ["openai-sff/comparisons/3", "b", "cnndm0"],
    ]);
    // Records stay as published (extra fields included).
    const rawOut = await readJsonl(join(out, "tldr", "comparisons.jsonl.gz"), (v) => v as Record<string, unknown>);
    expect(rawOut[0].extra).toEqual({});
    const test = await loadTldrPosts(join(out, "tldr", "posts-test.jsonl.gz"));
    expect(test.map((p) => [p.id, p.summary])).toEqual([["test0", "s"], ["test1", "s"], ["test2", "s"]]);
  });

  it("refuses missing downloads and a malformed raw record (by raw file and line), leaving no output", async () => {
    const dir = tmpDir();
    await expect(convertTldr(join(dir, "none"), join(dir, "o"))).rejects.toThrow(/missing downloaded file\(s\): .*batch3\.json/);
    const raw = join(dir, "raw");
    writeRaw(raw, [{ info: { id: "t3_p", post: "p", title: "t", subreddit: "s" }, summaries: [{ text: "a" }, { text: "b" }], choice: 0 }, "{broken"]);
    const msg = await dataError(convertTldr(raw, join(dir, "o2"), { batches: ["batch3"] }));
    expect(msg).toContain(`${join(raw, "comparisons", "batch3.json")}:2: not valid JSON`);
    expect(existsSync(join(dir, "o2", "tldr", "comparisons.jsonl.gz"))).toBe(false);
    expect(existsSync(join(dir, "o2", "tldr", "comparisons.jsonl.gz.partial"))).toBe(false);
  });
});

describe("the real HH-RLHF harmless-base test split (../shared/data)", () => {
  const FILE = join("hh-rlhf", "harmless-base-test.jsonl.gz");
  const dataDir = [process.env.DPALIGN_DATA_DIR, ...DEFAULT_DATA_DIRS].find((d) => d !== undefined && existsSync(join(d, FILE)));

  it("loads 2,307 of the 2,312 pairs and names the 5 whose transcripts differ before the last turn", async () => {
    expect(dataDir, `no ${FILE} in DPALIGN_DATA_DIR or ${DEFAULT_DATA_DIRS.join(", ")}`).toBeDefined();
    const f = join(dataDir as string, FILE);
    const l = await loadHhRlhf(f);
    expect(l.pairs.length + l.skipped.length).toBe(2312);
    expect(l.pairs).toHaveLength(2307);
    expect(l.skipped.map((s) => [s.line, s.reason])).toEqual([1255, 1689, 1951, 1953, 2037].map((n) => [n, "no-shared-prefix"]));
    expect(describeSkips(l)).toBe(`${f}: 2307 pairs; 5 records skipped (5 no-shared-prefix: lines 1255, 1689, 1951, 1953, 2037)`);
    expect(new Set(l.pairs.map((p) => p.id)).size).toBe(2307);
    expect(l.pairs[0].id).toBe("hh-rlhf/harmless-base-test/1");
    for (const p of l.pairs) {
      expect(p.prompt.startsWith(H) && p.prompt.endsWith(A)).toBe(true);
      expect(p.chosen).not.toBe(p.rejected);
    }
    // A few chosen responses are empty in the original data; they are kept.
    expect(l.pairs.filter((p) => p.chosen === "").length).toBe(4);
  });
});
