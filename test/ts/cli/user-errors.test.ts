// Issue 14: every condition a user can cause ends with ONE clear message naming the flag, field or
// file, and a non-zero exit code other than 70 ("internal error (please report)"); never a stack
// trace. Runs the built CLI (`npm run build` first; `npm test` does) as a user would.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import { tarHeader } from "../pipeline/helpers.js";

const root = resolve(import.meta.dirname, "..", "..", "..");
const bin = join(root, "bin", "dpalign.js");
const work = mkdtempSync(join(tmpdir(), "dpalign-user-errors-"));
// No case may reach Python: an interpreter that is not there makes a regression fail fast.
const noPython = { DPALIGN_PYTHON: join(work, "no-python-here") };

function dpalign(args: string[], env: Record<string, string> = noPython, timeout = 60_000) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: "utf8", timeout, env: { ...process.env, DPALIGN_DATA_DIR: "", ...env } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** A user error: exit code not 0 and not 70, one `dpalign:` message matching `message`, no stack. */
function expectUserError(r: ReturnType<typeof dpalign>, message: RegExp): void {
  const shown = `exit ${r.status} (signal ${r.signal})\nstderr:\n${r.stderr}`;
  expect(r.signal, shown).toBeNull();
  expect(r.status, shown).not.toBe(0);
  expect(r.status, shown).not.toBe(70);
  expect(r.stderr, shown).not.toMatch(/^\s+at /m);
  expect(r.stderr, shown).not.toMatch(/internal error|Unhandled|Error:/);
  expect(r.stderr.match(/^dpalign: /gm), shown).toHaveLength(1);
  expect(r.stderr, shown).toMatch(message);
}


/** A data directory whose imdb/ files are valid except `broken` (split -> file contents). */
function dataDir(name: string, broken: Record<string, Buffer>): string {
  const dir = join(work, name);
  mkdirSync(join(dir, "imdb"), { recursive: true });
  for (const split of ["train", "test", "unsup"]) {
    const lines = Array.from({ length: 4 }, (_, i) => JSON.stringify(split === "unsup" ? { id: `train/unsup/${i}`, text: `text ${i}` } : { id: `${split}/pos/${i}`, text: `text ${i}`, label: 1, rating: 8 }));
    writeFileSync(join(dir, "imdb", `${split}.jsonl.gz`), broken[split] ?? gzipSync(lines.join("\n") + "\n"));
  }
  return dir;
}

const paths: Record<string, string> = {};
beforeAll(() => {
  if (!existsSync(join(root, "dist", "cli", "main.js"))) throw new Error("the CLI is not built: run `npm run build` first");
  paths.file = join(work, "a-file");
  writeFileSync(paths.file, "x");
  paths.four = join(work, "four.yaml");
  writeFileSync(paths.four, 'privacy:\n  epsilon: "four"\n');
  paths.huge = join(work, "huge.yaml");
  writeFileSync(paths.huge, "privacy:\n  epsilon: 1e9\n");
  const review = Buffer.from("Great");
  paths.oneReview = join(work, "one-review.tar.gz");
  writeFileSync(paths.oneReview, gzipSync(Buffer.concat([tarHeader("aclImdb/train/pos/0_9.txt", review.length), review, Buffer.alloc(512 - review.length), Buffer.alloc(1024)])));
  const latin1 = Buffer.from('{"id":"train/pos/9","text":"caf\u00e9","label":1,"rating":9}\n', "latin1");
  paths.badUtf8 = dataDir("bad-utf8", { train: gzipSync(Buffer.concat([Buffer.from('{"id":"train/pos/0","text":"ok","label":1,"rating":9}\n'), latin1])) });
  paths.emptyGzip = dataDir("empty-gzip", { unsup: gzipSync("") });
});

const eps = ["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1", "--steps", "100", "--delta", "1e-5"];
const cal = ["privacy", "calibrate", "--sample-rate", "0.01", "--steps", "100", "--target-epsilon", "4", "--delta", "1e-5"];
/** `base` with one flag's value replaced. */
const withFlag = (base: string[], flag: string, value: string): string[] => {
  const i = base.indexOf(flag);
  return i < 0 ? [...base, flag, value] : [...base.slice(0, i + 1), value, ...base.slice(i + 2)];
};

describe("1. privacy parameters out of range", () => {
  it.each([
    ["--steps 1e12", withFlag(eps, "--steps", "1e12"), /^dpalign: steps: must be an integer in \[0, 100000000\], got 1000000000000$/m],
    ["--noise-multiplier 1e-6", withFlag(eps, "--noise-multiplier", "1e-6"), /^dpalign: noise-multiplier: must be in \[0\.05, 10000\], got 0\.000001/m],
    ["--reuse 1e15", withFlag(eps, "--reuse", "1e15"), /^dpalign: reuse: must be an integer in \[1, 10000\]/m],
    ["--target-epsilon 1e9", withFlag(cal, "--target-epsilon", "1e9"), /^dpalign: target-epsilon: must be in \(0, 100\], got 1000000000$/m],
    ["--delta 0.9999999", withFlag(cal, "--delta", "0.9999999"), /^dpalign: delta: must be in \[1e-10, 0\.1\], got 0\.9999999/m],
    ["--target-epsilon inf", withFlag(cal, "--target-epsilon", "inf"), /^dpalign: target-epsilon: must be in \(0, 100\], got Infinity/m],
    ["--ledger /nonexistent.jsonl", ["privacy", "compose", "--ledger", "/nonexistent.jsonl", "--delta", "1e-5"], /^dpalign: ledger: \/nonexistent\.jsonl: no such file/m],
  ])("%s", (_name, args, message) => {
    expectUserError(dpalign(args), message);
  });
});

describe("2. config", () => {
  it("a config path that is a directory", () => {
    expectUserError(dpalign(["run", work, "--dry-run"]), new RegExp(`${work}: is a directory; give a YAML or JSON config file`));
  });
  it('privacy.epsilon: "four"', () => {
    expectUserError(dpalign(["run", paths.four, "--dry-run"]), /four\.yaml: invalid config\n {2}privacy\.epsilon: expected a positive number or "inf"/);
  });
  it("privacy.epsilon 1e9 in YAML and through --set", () => {
    expectUserError(dpalign(["run", paths.huge, "--dry-run"]), /huge\.yaml: invalid config\n {2}privacy\.epsilon: must be in \(0, 100\]/);
    expectUserError(dpalign(["run", "configs/demo.yaml", "--dry-run", "--set", "privacy.epsilon=1e9"]), /with --set: invalid config\n {2}privacy\.epsilon: must be in \(0, 100\]/);
  });
});

describe("3. worker keygen --out", () => {
  it("under a regular file", () => {
    expectUserError(dpalign(["worker", "keygen", "--out", join(paths.file, "keys")]), new RegExp(`--out: cannot create .*: ${paths.file} is a file, not a directory`));
  });
  it.runIf(existsSync("/proc/self"))("under /proc: an error, not a spin", () => {
    expectUserError(dpalign(["worker", "keygen", "--out", "/proc/x"], noPython, 20_000), /--out: cannot create the directory \/proc\/x/);
  });
});

describe("4. data fetch imdb --archive", () => {
  it("a missing archive", () => {
    expectUserError(dpalign(["data", "fetch", "imdb", "--archive", "/missing", "--out", join(work, "fetched")]), /--archive: \/missing: no such file/);
  });
  it("an archive that is not the IMDb archive", () => {
    const r = dpalign(["data", "fetch", "imdb", "--archive", paths.oneReview, "--out", join(work, "fetched")]);
    expectUserError(r, /one-review\.tar\.gz: not the complete IMDb archive .*found train 1 pos \+ 0 neg, test 0 pos \+ 0 neg, unsup 0; expected train 12500 pos/);
    expect(existsSync(join(work, "fetched", "imdb"))).toBe(false);
  });
});

describe("5. data loading", () => {
  it("invalid UTF-8 names file and line", () => {
    const r = dpalign(["run", "configs/demo.yaml", "--data-dir", paths.badUtf8, "--run-dir", join(work, "run-utf8")]);
    expectUserError(r, new RegExp(`${join(paths.badUtf8, "imdb", "train.jsonl.gz")}:2: not valid UTF-8`));
  });
  it("an empty gzip file is named", () => {
    const r = dpalign(["run", "configs/demo.yaml", "--data-dir", paths.emptyGzip, "--run-dir", join(work, "run-empty")]);
    expectUserError(r, new RegExp(`${join(paths.emptyGzip, "imdb", "unsup.jsonl.gz")}: no records`));
  });
});

describe("6. DPALIGN_PYTHON pointing nowhere", () => {
  it.each([
    ["worker", ["worker", "--endpoint", `ipc://${join(work, "w.sock")}`]],
    ["doctor", ["doctor"]],
  ])("%s says to fix or unset the variable", (_name, args) => {
    const r = dpalign(args, { DPALIGN_PYTHON: "/nowhere/python" });
    expectUserError(r, /DPALIGN_PYTHON is set to "\/nowhere\/python", which does not exist; point it at .* or unset it/);
    expect(r.stderr).not.toMatch(/^dpalign: .*run `npm run setup:python` or set/m);
  });
});

describe("7. help and version", () => {
  it("--help wraps between words", () => {
    const r = dpalign(["--help"]);
    expect(r.status).toBe(0);
    const joined = r.stdout.replace(/\s*\n\s+/g, " ");
    expect(joined).toContain("Align language models with reinforcement learning under differential privacy.");
    expect(joined).toContain("Check the Python side: interpreter, torch and device, worker package, protocol version, optional backends, and a real worker round trip");
    for (const line of r.stdout.split("\n")) expect(line.length).toBeLessThanOrEqual(110);
  });
  it("--version prints package.json's version", () => {
    const r = dpalign(["--version"]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe((JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version);
  });
  it("demo's time is the README's in --help and in configs/demo.yaml", () => {
    const said = "about 5 minutes on 2 CPU cores";
    expect(readFileSync(join(root, "README.md"), "utf8")).toContain(said);
    expect(dpalign(["demo", "--help"]).stdout.replace(/\s*\n\s+/g, " ")).toContain(said);
    expect(readFileSync(join(root, "configs", "demo.yaml"), "utf8").replace(/\n# /g, " ")).toContain(said);
  });
});

describe("8. run --dry-run --data-dir", () => {
  it("a directory that is not there", () => {
    expectUserError(dpalign(["run", "configs/demo.yaml", "--dry-run", "--data-dir", "/nonexistent"]), /--data-dir points to \/nonexistent, which does not exist/);
  });
});
