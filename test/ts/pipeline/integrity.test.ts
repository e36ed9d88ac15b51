/**
 * Fault injection on run directories (issue 14): concurrent runs, a crash between a ledger record
 * and its checkpoint (pipeline.test.ts), every kind of ledger tampering, changed data on resume,
 * a corrupted and a truncated checkpoint, a missing secret, a copied run directory, and SIGINT.
 * Each damaged directory is refused before any batch runs, with a message saying what and how
 * to recover; nothing is accounted twice or lost.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { parseConfig, type Config } from "../../../ts/pipeline/config.js";
import { runPipeline, type RunOptions } from "../../../ts/pipeline/run.js";
import { RunLock } from "../../../ts/pipeline/lock.js";
import { ResumeMismatchError, RunIntegrityError, RunLockedError, InterruptedError } from "../../../ts/pipeline/run-errors.js";
import { PrivacyLedger } from "../../../ts/privacy/index.js";
import { projectRoot } from "../../../ts/util/python.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

let client: WorkerClient;
let api: WorkerApi;
let dataDir: string;
let cacheDir: string;
let cfg: Config;
/** A run stopped after 3 SFT batches: ledger and checkpoint hold 3 batches. */
let interrupted: string;

const opts = (runDir: string, over: Partial<RunOptions> = {}): RunOptions => ({ cfg, runDir, dataDir, cacheDir, api, ...over });
const copyOf = (dir: string) => {
  const to = join(tmpDir(), "copy");
  cpSync(dir, to, { recursive: true });
  return to;
};
const ledgerOf = (dir: string) => join(dir, "ledger.jsonl");
const lines = (f: string) => readFileSync(f, "utf8").trim().split("\n");

beforeAll(async () => {
  client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
  api = new WorkerApi(client);
  dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
  cacheDir = tmpDir("dpalign-cache-");
  cfg = parseConfig({ ...TINY, sft: { batchSize: 5, epochs: 1, maxTokens: 16 } });
  interrupted = join(tmpDir(), "run");
  await expect(runPipeline(opts(interrupted, { hooks: { stopAfter: { stage: "sft", batches: 3 } } }))).rejects.toBeInstanceOf(InterruptedError);
  expect(new PrivacyLedger(ledgerOf(interrupted)).totals()[0].steps).toBe(3);
}, 180_000);
afterAll(async () => {
  await client?.close();
});

describe("ledger tampering is refused before anything runs", () => {
  const cases: [string, (dir: string) => void, RegExp][] = [
    ["the ledger deleted", (d) => rmSync(ledgerOf(d)), /checkpoint holds 3 batches but the ledger accounts 0/],
    ["its last line removed", (d) => writeFileSync(ledgerOf(d), lines(ledgerOf(d)).slice(0, -1).join("\n") + "\n"), /checkpoint holds 3 batches but the ledger accounts 2/],
    ["its last line cut in the middle", (d) => writeFileSync(ledgerOf(d), readFileSync(ledgerOf(d), "utf8").slice(0, -20)), /the last line is incomplete/],
    ["a line edited", (d) => writeFileSync(ledgerOf(d), lines(ledgerOf(d)).map((l, i) => (i === 0 ? l.replace(/"steps":1/, '"steps":0') : l)).join("\n") + "\n"), /hash chain is broken/],
    ["two lines swapped", (d) => {
      const ls = lines(ledgerOf(d));
      writeFileSync(ledgerOf(d), [ls[1], ls[0], ...ls.slice(2)].join("\n") + "\n");
    }, /hash chain is broken/],
    ["a line duplicated", (d) => {
      const ls = lines(ledgerOf(d));
      writeFileSync(ledgerOf(d), [...ls, ls[2]].join("\n") + "\n");
    }, /hash chain is broken/],
    ["a record rewritten with a consistent chain but other sigma", (d) => {
      const recs = new PrivacyLedger(ledgerOf(d)).read();
      rmSync(ledgerOf(d));
      const l = new PrivacyLedger(ledgerOf(d));
      for (const r of recs) l.append({ ...r, sigma: r.sigma * 2 });
    }, /differs from the plan/],
    ["replaced by a fresh, shorter ledger", (d) => {
      const recs = new PrivacyLedger(ledgerOf(d)).read();
      rmSync(ledgerOf(d));
      const l = new PrivacyLedger(ledgerOf(d));
      l.append({ ...recs[0], steps: 3, to_batch: 3 });
    }, /line the sft checkpoint was written after is not in the ledger/],
  ];
  for (const [what, damage, message] of cases) {
    it(`${what}`, async () => {
      const dir = copyOf(interrupted);
      damage(dir);
      const before = existsSync(ledgerOf(dir)) ? readFileSync(ledgerOf(dir), "utf8") : "";
      const err = await runPipeline(opts(dir)).catch((e) => e);
      expect(err).toBeInstanceOf(RunIntegrityError);
      expect(err.message).toMatch(message);
      expect(err.message).toMatch(/new --run-dir/);
      // nothing ran: the ledger is as it was, and the lock was released
      expect(existsSync(ledgerOf(dir)) ? readFileSync(ledgerOf(dir), "utf8") : "").toBe(before);
      expect(existsSync(join(dir, ".lock"))).toBe(false);
    }, 60_000);
  }

  it("a completed stage whose ledger was cut is refused at start, not after the next stage ran", async () => {
    const dir = join(tmpDir(), "done");
    await expect(runPipeline(opts(dir, { hooks: { stopAfter: { stage: "ppo", batches: 1 } } }))).rejects.toBeInstanceOf(InterruptedError);
    const ls = lines(ledgerOf(dir)).filter((l) => JSON.parse(l).stage === "sft");
    rmSync(ledgerOf(dir));
    const l = new PrivacyLedger(ledgerOf(dir));
    for (const x of ls.slice(0, -1)) l.append(JSON.parse(x));
    await expect(runPipeline(opts(dir))).rejects.toThrow(/accounts \d+ sft batches but the stage completed/);
  }, 120_000);
});

describe("resume is bound to its data, key and checkpoints", () => {
  it("refuses other data, naming the file", async () => {
    const other = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
    const f = join(other, "imdb", "train.jsonl.gz");
    writeFileSync(f, gzipSync(gunzipSync(readFileSync(f)).toString("utf8").replace("train review 3.", "train review 3, changed.")));
    const dir = copyOf(interrupted);
    const err = await runPipeline(opts(dir, { dataDir: other })).catch((e) => e);
    expect(err).toBeInstanceOf(ResumeMismatchError);
    expect(err.message).toMatch(/imdb\/train\.jsonl\.gz \(its SHA-256 differs\)/);
  }, 60_000);

  it("refuses a run directory whose secret key is gone", async () => {
    const dir = copyOf(interrupted);
    rmSync(join(dir, "private", "secret.json"));
    await expect(runPipeline(opts(dir))).rejects.toThrow(/secret\.json is missing .* cannot be redrawn/);
  }, 60_000);

  it("refuses a corrupted and a truncated checkpoint, naming the file", async () => {
    for (const damage of ["corrupt", "truncate"] as const) {
      const dir = copyOf(interrupted);
      const w = join(dir, "checkpoints", "sft", "last", "weights.safetensors");
      const bytes = readFileSync(w);
      if (damage === "corrupt") {
        for (let i = 200; i < 264 && i < bytes.length; i++) bytes[i] ^= 0xff;
        writeFileSync(w, bytes);
      } else writeFileSync(w, bytes.subarray(0, Math.floor(bytes.length / 2)));
      const err = await runPipeline(opts(dir)).catch((e) => e);
      expect(err, damage).toBeInstanceOf(Error);
      expect(err.message, damage).toMatch(/weights\.safetensors/);
      expect(err.message, damage).toMatch(/SHA-256|corrupt|truncat/i);
    }
  }, 60_000);

  it("resumes a copied run directory from the copy's own checkpoints and leaves the original untouched", async () => {
    const dir = copyOf(interrupted);
    const origLedger = readFileSync(ledgerOf(interrupted), "utf8");
    const s = await runPipeline(opts(dir));
    expect(s.sft.checkpoint).toBe(join("checkpoints", "sft", "last"));
    expect(JSON.parse(readFileSync(join(dir, "stages", "sft.json"), "utf8")).checkpoint).toBe(join("checkpoints", "sft", "last"));
    expect(readFileSync(ledgerOf(interrupted), "utf8")).toBe(origLedger);
    expect(new PrivacyLedger(ledgerOf(dir)).totals().find((t) => t.stage === "sft")!.steps).toBe(s.plan.sft.sampledBatches);
    // moved again after completion: the completed run still resolves its own checkpoints
    const moved = copyOf(dir);
    rmSync(dir, { recursive: true });
    const again = await runPipeline(opts(moved));
    expect(again.evals.map((e) => e.meanReward)).toEqual(s.evals.map((e) => e.meanReward));
  }, 120_000);

  it("refuses a damaged config.json and a --run-dir that is a file, naming them", async () => {
    const dir = copyOf(interrupted);
    writeFileSync(join(dir, "config.json"), "{ not json");
    await expect(runPipeline(opts(dir))).rejects.toThrow(/config\.json: not valid JSON.*damaged/);
    const file = join(tmpDir(), "a-file");
    writeFileSync(file, "x");
    await expect(runPipeline(opts(file))).rejects.toThrow(/--run-dir: .* is not a directory/);
  });
});

describe("locking", () => {
  it("refuses a second run on a directory in use, reports a stale lock, and breaks it only with forceUnlock", async () => {
    const dir = copyOf(interrupted);
    const lock = RunLock.acquire(dir);
    await expect(runPipeline(opts(dir))).rejects.toThrow(RunLockedError);
    await expect(runPipeline(opts(dir))).rejects.toThrow(new RegExp(`in use by pid ${process.pid}`));
    lock.release();
    // a lock left by a process that is gone
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" }).stdout;
    writeFileSync(join(dir, ".lock"), JSON.stringify({ pid: Number(dead), host: hostname(), since: "then", command: "x" }) + "\n");
    await expect(runPipeline(opts(dir))).rejects.toThrow(/no longer running \(stale lock\).*--force-unlock/);
    const s = await runPipeline(opts(dir, { forceUnlock: true }));
    expect(s.evals).toHaveLength(3);
    expect(existsSync(join(dir, ".lock"))).toBe(false);
  }, 120_000);
});

describe("the CLI under concurrency and signals", () => {
  it("a second `dpalign run` on the same directory is refused; SIGINT stops the first after saving, with a message, and removes its socket", async () => {
    const cfgFile = join(tmpDir(), "cfg.json");
    writeFileSync(cfgFile, JSON.stringify({ ...TINY, sft: { batchSize: 2, epochs: 6, maxTokens: 16 }, checkpointEvery: 1 }));
    const dir = join(tmpDir(), "run");
    const bin = join(projectRoot, "bin", "dpalign.js");
    const args = ["run", cfgFile, "--run-dir", dir, "--data-dir", dataDir, "--cache-dir", cacheDir];
    const first = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let err1 = "";
    first.stderr.on("data", (d) => (err1 += d));
    const exited = new Promise<number | null>((res) => first.on("exit", (code) => res(code)));
    // wait until the first has the lock and is training
    for (let i = 0; i < 600 && !/DP-SFT/.test(err1); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(dir, ".lock"))).toBe(true);
    const second = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 60_000 });
    expect(second.status).toBe(4);
    expect(second.stderr).toMatch(new RegExp(`in use by pid ${first.pid}`));
    expect(second.stderr).not.toMatch(/\n\s+at /);
    first.kill("SIGINT");
    const code = await exited;
    expect(code).toBe(130);
    expect(err1).toMatch(/SIGINT received: finishing the current batch/);
    expect(err1).toMatch(/stopped by SIGINT after batch \d+ of \d+; the checkpoint and ledger are saved\. Run the same command again to resume/);
    expect(existsSync(join(dir, ".lock"))).toBe(false);
    expect(readdirSync(tmpdir()).filter((f) => f.startsWith(`dpalign-${first.pid}-`))).toEqual([]);
    const done = new PrivacyLedger(join(dir, "ledger.jsonl")).totals()[0].steps;
    expect(Number(JSON.parse(readFileSync(join(dir, "checkpoints", "sft", "last", "manifest.json"), "utf8")).metadata.batches)).toBe(done);
    expect(statSync(join(dir, "private")).mode & 0o077).toBe(0);
  }, 180_000);
});
