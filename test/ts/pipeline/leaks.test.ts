/**
 * The (epsilon, delta) claim against a reader of every released file (DESIGN.md rules 7-9):
 * a real run through the CLI, then
 * - a leak scan of stdout, stderr and every released file for private ids, private texts, the
 *   secret key, the private data file's hash, and unnoised statistics of private batches;
 * - an attempt to recompute the stage split and the Poisson samples from the released seed, which
 *   must fail in the default mode and succeed in reproducible mode (the test's own control).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { roleSizes } from "../../../ts/pipeline/run.js";
import { assignRoles, loadImdb, normalisedText } from "../../../ts/pipeline/data/roles.js";
import { poissonSample } from "../../../ts/pipeline/sampling.js";
import { membersDigest } from "../../../ts/pipeline/stages/membership.js";
import { reproducibleKey } from "../../../ts/pipeline/secret.js";
import { KeyedRng } from "../../../ts/util/keyed-rng.js";
import { SeededRng } from "../../../ts/util/rng.js";
import { projectRoot } from "../../../ts/util/python.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

const BIN = join(projectRoot, "bin", "dpalign.js");
let dataDir: string;
let cacheDir: string;

interface CliRun {
  dir: string;
  out: string;
  err: string;
}

function cliRun(extra: object = {}): CliRun {
  const cfgFile = join(tmpDir(), "cfg.json");
  const cfg = { ...TINY, ...extra };
  writeFileSync(cfgFile, JSON.stringify(cfg));
  const dir = join(tmpDir(), "run");
  const r = spawnSync(process.execPath, [BIN, "run", cfgFile, "--run-dir", dir, "--data-dir", dataDir, "--cache-dir", cacheDir], { encoding: "utf8", timeout: 240_000 });
  if (r.status !== 0) throw new Error(`dpalign run failed (${r.status}): ${r.stderr}`);
  return { dir, out: r.stdout, err: r.stderr };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

const readJsonl = (f: string) => readFileSync(f, "utf8").trim().split("\n").map((l) => JSON.parse(l));

/** Keys that carry statistics of private batches or private membership; none may be in a released JSON file. */
const PRIVATE_KEYS = new Set(["loss", "lossEma", "meanScore", "meanKl", "meanExamples", "examples", "fractionClipped", "gradNormMedian", "gradNormQuantiles", "members", "rollouts", "clipfrac", "batch_size", "noiseSeed"]);

function keysOf(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x) => keysOf(x, out));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) (out.push(k), keysOf(x, out));
  return out;
}

beforeAll(() => {
  dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
  cacheDir = tmpDir("dpalign-cache-");
});

describe("released outputs of a run", () => {
  let run: CliRun;
  beforeAll(() => {
    run = cliRun();
  }, 240_000);

  it("carry no private id, text, key, data hash or unnoised statistic (stdout and every file outside private/)", async () => {
    const released = filesUnder(run.dir).filter((f) => !relative(run.dir, f).startsWith("private") && !f.endsWith(".safetensors"));
    expect(released.map((f) => relative(run.dir, f))).toEqual(expect.arrayContaining(["report.md", "summary.json", "privacy.json", "ledger.jsonl", "roles.json", "plan.json", "samples.jsonl"]));
    const texts = [...released.map((f) => ({ name: relative(run.dir, f), text: readFileSync(f, "utf8") })), { name: "stdout", text: run.out }, { name: "stderr", text: run.err }];

    const priv = JSON.parse(readFileSync(join(run.dir, "private", "roles.json"), "utf8"));
    const privateIds: string[] = [...priv.d1.ids, ...priv.d3.ids];
    expect(privateIds.length).toBeGreaterThan(10);
    const src = await loadImdb(dataDir);
    const privateTexts = src.train.filter((r) => privateIds.includes(r.id)).map((r) => normalisedText(r.text));
    const secret = JSON.parse(readFileSync(join(run.dir, "private", "secret.json"), "utf8")).key as string;
    const trainHash = JSON.parse(readFileSync(join(run.dir, "private", "binding.json"), "utf8")).data.train as string;
    // Unnoised statistics of private batches, at the precision a leak would print them.
    const stats = readJsonl(join(run.dir, "private", "metrics.jsonl")).flatMap((m) => [m.loss, m.meanScore, m.meanKl].filter((v) => typeof v === "number" && v !== 0));
    expect(stats.length).toBeGreaterThan(5);
    const renderings = stats.flatMap((v: number) => [String(v), v.toPrecision(6), v.toPrecision(5)]);

    for (const { name, text } of texts) {
      const low = text.toLowerCase();
      for (const id of privateIds) expect(text.includes(`"${id}"`) || text.includes(` ${id} `), `${name} names private record ${id}`).toBe(false);
      for (const t of privateTexts) expect(low.includes(t), `${name} quotes a private review`).toBe(false);
      expect(text.includes(secret), `${name} holds the run key`).toBe(false);
      expect(text.includes(trainHash), `${name} holds the private data file's hash`).toBe(false);
      for (const r of renderings) expect(new RegExp(`(?<![\\d.])${r.replace(/[.+-]/g, "\\$&")}(?!\\d)`).test(text), `${name} holds the private statistic ${r}`).toBe(false);
      if (name.endsWith(".json") || name.endsWith(".jsonl")) {
        const values = name.endsWith(".jsonl") ? text.trim().split("\n").map((l) => JSON.parse(l)) : [JSON.parse(text)];
        const bad = keysOf(values).filter((k) => PRIVATE_KEYS.has(k));
        expect(bad, `${name} has keys of private statistics`).toEqual([]);
      }
    }
    const roles = JSON.parse(readFileSync(join(run.dir, "roles.json"), "utf8"));
    for (const k of ["d1", "d3", "privateD", "removed"]) expect(roles[k], `roles.json.${k}`).toBeUndefined();
    // progress on the console shows counts and time only
    for (const line of (run.out + run.err).split("\n").filter((l) => /^(DP-SFT|DP-PPO)/.test(l))) expect(line).toMatch(/^DP-(SFT|PPO): \d+\/\d+ *$/);
    expect(run.out).toMatch(/composed: epsilon \d/);
    expect(run.out).not.toMatch(/NOT DIFFERENTIALLY PRIVATE/);
  });

  it("cannot be used to recompute the stage split or any Poisson sample from the released seed", async () => {
    const cfg = JSON.parse(readFileSync(join(run.dir, "config.json"), "utf8"));
    const plan = JSON.parse(readFileSync(join(run.dir, "plan.json"), "utf8"));
    const priv = JSON.parse(readFileSync(join(run.dir, "private", "roles.json"), "utf8"));
    const src = await loadImdb(dataDir);
    const attempts = attackerGuesses(cfg, src, plan, priv.d1.size);
    const actual = readJsonl(join(run.dir, "private", "metrics.jsonl")).filter((m) => m.stage === "sft").map((m) => m.members as string);
    expect(actual).toHaveLength(plan.sft.sampledBatches);
    for (const g of attempts) {
      expect(g.d1, `${g.how}: split`).not.toEqual(priv.d1.ids);
      expect(g.batches.filter((b, t) => b === actual[t]), `${g.how}: batches`).toEqual([]);
    }
  });

  it("in reproducible mode are recomputable (so the test's attack is sound) and say the run is not private", async () => {
    const rep = cliRun({ privacy: { ...TINY.privacy, reproducible: true } });
    const cfg = JSON.parse(readFileSync(join(rep.dir, "config.json"), "utf8"));
    const plan = JSON.parse(readFileSync(join(rep.dir, "plan.json"), "utf8"));
    const priv = JSON.parse(readFileSync(join(rep.dir, "private", "roles.json"), "utf8"));
    const src = await loadImdb(dataDir);
    const g = attackerGuesses(cfg, src, plan, priv.d1.size).find((x) => x.how === "reproducible key")!;
    expect(g.d1).toEqual(priv.d1.ids);
    const actual = readJsonl(join(rep.dir, "private", "metrics.jsonl")).filter((m) => m.stage === "sft").map((m) => m.members as string);
    expect(g.batches).toEqual(actual);
    expect(readFileSync(join(rep.dir, "report.md"), "utf8").split("\n")[0]).toMatch(/NOT DIFFERENTIALLY PRIVATE \(epsilon = inf\)/);
    expect(rep.out).toMatch(/NOT DIFFERENTIALLY PRIVATE/);
    const privacy = JSON.parse(readFileSync(join(rep.dir, "privacy.json"), "utf8"));
    expect(privacy.differentiallyPrivate).toBe(false);
    expect(privacy.composed.epsilon).toBe("inf");
    const summary = JSON.parse(readFileSync(join(rep.dir, "summary.json"), "utf8"));
    expect(Object.keys(summary).slice(0, 3)).toEqual(["differentiallyPrivate", "notPrivateReason", "epsilon"]);
    expect(summary.differentiallyPrivate).toBe(false);
    expect(summary.epsilon).toBe("inf");
    expect(new Set(readJsonl(join(rep.dir, "ledger.jsonl")).map((r) => r.noise))).toEqual(new Set(["seeded"]));
  }, 240_000);
});

/** What someone holding the released config (seed included) can compute: the old seeded streams and the reproducible key. */
function attackerGuesses(cfg: { seed: number; data: object }, src: Awaited<ReturnType<typeof loadImdb>>, plan: { sft: { q: number; sampledBatches: number } }, n1: number) {
  const cfgParsed = parseConfig(cfg);
  const sample = (rng: { fork(l: string): { fork(l: string): unknown } }) =>
    Array.from({ length: plan.sft.sampledBatches }, (_, t) => membersDigest(poissonSample(n1, plan.sft.q, (rng.fork("sft") as SeededRng).fork(`batch/${t}`))));
  const repKey = new KeyedRng(reproducibleKey(cfg.seed));
  return [
    { how: "seeded run stream", d1: assignRoles(src, roleSizes(cfgParsed), new KeyedRng(reproducibleKey(cfg.seed + 1)), true).d1.map((r) => r.id), batches: sample(new SeededRng(`run/${cfg.seed}`)) },
    { how: "reproducible key", d1: assignRoles(src, roleSizes(cfgParsed), repKey.fork("roles"), true).d1.map((r) => r.id), batches: sample(repKey.fork("stages")) },
  ];
}
