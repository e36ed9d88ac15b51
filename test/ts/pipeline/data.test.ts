import { describe, expect, it } from "vitest";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { readJsonl, imdbValidator, cleanReview } from "../../../ts/pipeline/data/jsonl.js";
import { resolveDataDir } from "../../../ts/pipeline/data/dir.js";
import { loadImdb } from "../../../ts/pipeline/data/roles.js";
import { convertImdbArchive } from "../../../ts/pipeline/data/fetch.js";
import { DataError } from "../../../ts/util/errors.js";
import { makeTar, tmpDir, writeTinyImdb } from "./helpers.js";

describe("JSON-lines loader", () => {
  it("reads gzip and plain files and cleans <br /> tags", async () => {
    const dir = writeTinyImdb(tmpDir());
    const recs = await readJsonl(join(dir, "imdb", "train.jsonl.gz"), imdbValidator(true));
    expect(recs).toHaveLength(40);
    expect(recs[0].label).toBe(1);
    expect(cleanReview(recs[0].text)).not.toContain("<br");
    const plain = join(dir, "plain.jsonl");
    writeFileSync(plain, '{"id":"a","text":"x"}\n\n{"id":"b","text":"y"}\n');
    expect(await readJsonl(plain, imdbValidator(false))).toHaveLength(2);
  });

  it("reports malformed lines by file and line number", async () => {
    const dir = tmpDir();
    const f = join(dir, "bad.jsonl.gz");
    writeFileSync(f, gzipSync([
      '{"id":"train/pos/0","text":"ok","label":1,"rating":9}',
      "{not json",
      '{"id":"train/pos/2","text":"ok","label":3,"rating":9}',
      '{"id":"train/pos/3","label":1,"rating":9}',
      '{"id":"train/pos/4","text":"ok","label":1,"rating":11}',
      "[1,2]",
    ].join("\n")));
    const err = await readJsonl(f, imdbValidator(true)).catch((e) => e);
    expect(err).toBeInstanceOf(DataError);
    expect(err.message).toContain(`${f}:2: not valid JSON`);
    expect(err.message).toContain(`${f}:3: field "label" must be 0 or 1`);
    expect(err.message).toContain(`${f}:4: field "text" must be a string`);
    expect(err.message).toContain(`${f}:5: field "rating"`);
  });

  it("reports a missing file and a corrupt gzip", async () => {
    await expect(readJsonl("/nonexistent/x.jsonl.gz", imdbValidator(true))).rejects.toThrow(/no such file/);
    const f = join(tmpDir(), "corrupt.jsonl.gz");
    writeFileSync(f, Buffer.from("this is not gzip at all"));
    await expect(readJsonl(f, imdbValidator(true))).rejects.toThrow(DataError);
  });

  it("refuses invalid UTF-8 by file and line, and keeps valid multi-byte text and CRLF lines", async () => {
    const dir = tmpDir();
    const f = join(dir, "latin1.jsonl.gz");
    writeFileSync(f, gzipSync(Buffer.concat([
      Buffer.from('{"id":"a","text":"caf\u00e9 ok"}\r\n', "utf8"),
      Buffer.from('{"id":"b","text":"caf\u00e9 latin-1"}\n', "latin1"),
    ])));
    const err = await readJsonl(f, imdbValidator(false)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toContain(`${f}:2: not valid UTF-8`);
    const ok = join(dir, "ok.jsonl");
    writeFileSync(ok, '{"id":"a","text":"caf\u00e9 \u2603"}\r\n{"id":"b","text":"x"}');
    expect(await readJsonl(ok, imdbValidator(false))).toEqual([{ id: "a", text: "caf\u00e9 \u2603" }, { id: "b", text: "x" }]);
  });

  it("names an empty file, gzip or not", async () => {
    const dir = tmpDir();
    const zero = join(dir, "zero.jsonl.gz");
    writeFileSync(zero, "");
    await expect(readJsonl(zero, imdbValidator(true))).rejects.toThrow(new RegExp(`${zero}: the file is empty`));
    const empty = join(dir, "empty.jsonl.gz");
    writeFileSync(empty, gzipSync(""));
    await expect(readJsonl(empty, imdbValidator(true))).rejects.toThrow(new RegExp(`${empty}: no records`));
  });
});

describe("data directory resolution", () => {
  it("prefers the flag, then DPALIGN_DATA_DIR, then the defaults", () => {
    const a = writeTinyImdb(tmpDir());
    const b = writeTinyImdb(tmpDir());
    expect(resolveDataDir({ flag: a, env: { DPALIGN_DATA_DIR: b } })).toEqual({ dir: a, from: "flag" });
    expect(resolveDataDir({ env: { DPALIGN_DATA_DIR: b } })).toEqual({ dir: b, from: "env" });
    expect(resolveDataDir({ env: {}, defaults: ["/nonexistent", a] })).toEqual({ dir: a, from: "default" });
    expect(() => resolveDataDir({ env: {}, defaults: ["/nonexistent"] })).toThrow(/dpalign data fetch imdb/);
    expect(() => resolveDataDir({ flag: "/nonexistent/dir" })).toThrow(/--data-dir/);
  });
});

describe("fetch: archive conversion", () => {
  it("converts a small aclImdb-layout archive into the JSON-lines format", async () => {
    const dir = tmpDir();
    const archive = join(dir, "aclImdb_v1.tar.gz");
    writeFileSync(archive, gzipSync(makeTar({
      "aclImdb/README": "readme",
      "aclImdb/train/pos/1_9.txt": "Great film.<br />Loved it",
      "aclImdb/train/pos/0_7.txt": "Good",
      "aclImdb/train/neg/0_2.txt": "Bad",
      "aclImdb/test/pos/0_10.txt": "Superb",
      "aclImdb/test/neg/0_1.txt": "Awful",
      "aclImdb/train/unsup/0_0.txt": "Unlabeled text",
    })));
    const out = join(dir, "out");
    const counts = await convertImdbArchive(archive, out, { allowPartial: true });
    expect(counts).toEqual({ train: 3, test: 2, unsup: 1 });
    const train = await readJsonl(join(out, "imdb", "train.jsonl.gz"), imdbValidator(true));
    expect(train.map((r) => r.id)).toEqual(["train/pos/0", "train/pos/1", "train/neg/0"]);
    expect(train[1]).toEqual({ id: "train/pos/1", text: "Great film.<br />Loved it", label: 1, rating: 9 });
    const unsup = await readJsonl(join(out, "imdb", "unsup.jsonl.gz"), imdbValidator(false));
    expect(unsup).toEqual([{ id: "train/unsup/0", text: "Unlabeled text" }]);
  });
  it("refuses a truncated or review-less archive", async () => {
    const dir = tmpDir();
    const bad = join(dir, "bad.tar.gz");
    writeFileSync(bad, gzipSync(makeTar({ "other/file.txt": "x" })));
    await expect(convertImdbArchive(bad, join(dir, "o"))).rejects.toThrow(/no review files/);
    const trunc = join(dir, "trunc.tar");
    writeFileSync(trunc, makeTar({ "aclImdb/train/pos/0_8.txt": "x".repeat(2000) }).subarray(0, 1000));
    await expect(convertImdbArchive(trunc, join(dir, "o2"))).rejects.toThrow(/truncated/);
    mkdirSync(join(dir, "o3"));
  });
  it("refuses an archive that is not the complete IMDb archive, saying what it found", async () => {
    const dir = tmpDir();
    const one = join(dir, "one.tar.gz");
    writeFileSync(one, gzipSync(makeTar({ "aclImdb/train/pos/0_8.txt": "Fine" })));
    const err = await convertImdbArchive(one, join(dir, "o")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(/one\.tar\.gz: not the complete IMDb archive .*found train 1 pos \+ 0 neg, test 0 pos \+ 0 neg, unsup 0; expected train 12500 pos \+ 12500 neg/);
    expect(existsSync(join(dir, "o", "imdb"))).toBe(false);
  });
  it("names a missing, empty or directory archive instead of failing on a stream error", async () => {
    const dir = tmpDir();
    await expect(convertImdbArchive(join(dir, "missing.tar.gz"), join(dir, "o"))).rejects.toThrow(/missing\.tar\.gz: no such file/);
    await expect(convertImdbArchive(join(dir, "missing.tar"), join(dir, "o"))).rejects.toThrow(DataError);
    writeFileSync(join(dir, "empty.tar.gz"), "");
    await expect(convertImdbArchive(join(dir, "empty.tar.gz"), join(dir, "o"))).rejects.toThrow(/empty\.tar\.gz: the archive is empty/);
    await expect(convertImdbArchive(dir, join(dir, "o"))).rejects.toThrow(/is a directory, not a tar archive/);
  });
});
