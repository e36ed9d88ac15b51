/**
 * The whole pipeline over a real worker on a very small preset (seconds): fake IMDb-shaped data,
 * a one-layer model, a handful of steps. Also: resumption after an interrupted stage.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { runPipeline } from "../../../ts/pipeline/run.js";
import { runSweep } from "../../../ts/pipeline/sweep.js";
import { InterruptedError } from "../../../ts/pipeline/stages/common.js";
import { PrivacyLedger } from "../../../ts/privacy/index.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";


let client: WorkerClient;
let api: WorkerApi;
let dataDir: string;
let cacheDir: string;

const e0Reference = (runDir: string) => JSON.parse(readFileSync(join(runDir, "samples.jsonl"), "utf8").split("\n")[0]).reference as string;

beforeAll(async () => {
  client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
  api = new WorkerApi(client);
  dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
  cacheDir = tmpDir("dpalign-cache-");
});
afterAll(async () => {
  await client?.close();
});

describe("pipeline on a very small preset", () => {
  it("runs every stage, writes the run directory, and caches the public models", async () => {
    const cfg = parseConfig(TINY);
    const runDir = join(tmpDir(), "run");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(s.evals.map((e) => e.model)).toEqual(["pretrained", "sft", "aligned"]);
    for (const e of s.evals) expect(Number.isFinite(e.meanReward)).toBe(true);
    // ROUGE against each held-out review's real continuation
    for (const e of s.evals) expect(e.rouge!.rougeL).toBeGreaterThanOrEqual(0);
    expect(e0Reference(runDir)).toBeTruthy();
    for (const f of ["config.json", "plan.json", "roles.json", "ledger.jsonl", "privacy.json", "report.md", "samples.jsonl", "summary.json"]) {
      expect(existsSync(join(runDir, f)), f).toBe(true);
    }
    for (const f of ["metrics.jsonl", "secret.json", "roles.json", "binding.json"]) expect(existsSync(join(runDir, "private", f)), `private/${f}`).toBe(true);
    for (const f of ["metrics.jsonl", "batches.jsonl", "worker-stderr.jsonl"]) expect(existsSync(join(runDir, f)), f).toBe(false);
    expect(existsSync(join(runDir, "checkpoints", "ppo", "last", "manifest.json"))).toBe(true);
    expect(existsSync(join(runDir, ".lock"))).toBe(false);
    expect(s.privacy.differentiallyPrivate).toBe(true);
    for (const st of s.privacy.stages) expect(st.epsilon).toBeLessThanOrEqual(8 * (1 + 1e-6));
    // the privacy ledger records every noisy step, contiguously, and composes within the target
    const priv = new PrivacyLedger(join(runDir, "ledger.jsonl"));
    expect(priv.totals().map((t) => [t.stage, t.steps])).toEqual([["sft", s.plan.sft.sampledBatches], ["ppo", s.plan.ppo.sampledBatches]]);
    const ppoRec = priv.read().find((r) => r.stage === "ppo")!;
    expect(ppoRec.reuse).toBe(2);
    expect(ppoRec.noise).toBe("secure");
    expect(ppoRec.sigma).toBeCloseTo(s.plan.ppo.sigmaEffective * Math.sqrt(2));
    expect(s.privacy.ledgerCheck!.epsilon).toBeLessThanOrEqual(8 * (1 + 1e-6));
    expect(readFileSync(join(runDir, "report.md"), "utf8")).toMatch(/pretrained \(eps = 0\)/);
    // a second run reuses the cached pretrained model and classifier
    const again = await runPipeline({ cfg: { ...cfg, seed: 1 }, runDir: join(tmpDir(), "run2"), dataDir, cacheDir, api });
    expect(again.pretrain.reused).toBe(true);
    expect(again.reward.reused).toBe(true);
  }, 120_000);

  it("composes the stages sequentially when one user may appear in both", async () => {
    const cfg = parseConfig({ ...TINY, privacy: { ...TINY.privacy, accountant: "prv", composition: "sequential" } });
    const runDir = join(tmpDir(), "run-seq");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(s.plan.sizes.d1).toBe(s.plan.sizes.privateD);
    expect(s.plan.sizes.d3).toBe(s.plan.sizes.privateD);
    const roles = JSON.parse(readFileSync(join(runDir, "private", "roles.json"), "utf8"));
    expect(roles.disjoint).toBe(false);
    // the executed mechanisms of both stages compose within the target, per the run's ledger
    expect(s.privacy.composed.epsilon).toBeLessThanOrEqual(8 * (1 + 1e-6));
    expect(s.privacy.composed.epsilon).toBeGreaterThan(Math.max(...s.privacy.stages.map((st) => st.epsilon)));
    expect(s.privacy.ledgerCheck!.epsilon).toBeCloseTo(s.privacy.composed.epsilon, 3);
  }, 120_000);

  it("runs the RLHF scenario: a DP reward model on D2 from gold-labelled pairs, then DP-PPO against it, three stages in parallel", async () => {
    const cfg = parseConfig({
      ...TINY, scenario: "rlhf", data: { ...TINY.data, rmFraction: 0.3, rmHeldOut: 6 }, rm: { batchSize: 4, epochs: 1, responseTokens: 3, pooling: "mean" },
      eval: { ...TINY.eval, rewardModelPairs: 8 },
    });
    const runDir = join(tmpDir(), "run-rlhf");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(s.plan.rm).toBeDefined();
    expect(s.plan.sizes.d2).toBe(12);
    expect(s.rm!.heldOutPairs).toBeGreaterThan(0);
    expect(s.rm!.heldOutAccuracy).toBeGreaterThanOrEqual(0);
    expect(s.rm!.heldOutAccuracy).toBeLessThanOrEqual(1);
    // rm.pooling reaches the worker: the DP reward model (and the evaluation one) were trained with mean pooling
    expect(JSON.parse(readFileSync(join(runDir, s.rm!.checkpoint, "manifest.json"), "utf8")).reward_pooling).toBe("mean");
    expect(JSON.parse(readFileSync(join(s.evalRm!.checkpoint, "manifest.json"), "utf8")).reward_pooling).toBe("mean");
    expect(s.privacy.stages.map((x) => x.stage)).toEqual(["sft", "rm", "ppo"]);
    for (const st of s.privacy.stages) expect(st.epsilon).toBeLessThanOrEqual(8 * (1 + 1e-6));
    const ledger = new PrivacyLedger(join(runDir, "ledger.jsonl"));
    expect(ledger.totals().map((t) => [t.stage, t.steps])).toEqual([["sft", s.plan.sft.sampledBatches], ["rm", s.plan.rm!.sampledBatches], ["ppo", s.plan.ppo.sampledBatches]]);
    // D1, D2, D3 disjoint
    const roles = JSON.parse(readFileSync(join(runDir, "private", "roles.json"), "utf8"));
    const [a, b, c] = [roles.d1.ids, roles.d2.ids, roles.d3.ids].map((x: string[]) => new Set(x));
    for (const id of b) expect(a.has(id) || c.has(id)).toBe(false);
    expect(readFileSync(join(runDir, "report.md"), "utf8")).toMatch(/DP reward model \(D2\): accuracy/);
    // the evaluation reward model: public pairs only, test time only
    expect(s.evalRm!.trainPairs).toBe(8);
    for (const e of s.evals) expect(Number.isFinite(e.evalRm!.meanReward)).toBe(true);
    expect(() => parseConfig({ ...TINY, scenario: "rlhf", ppo: { ...TINY.ppo, reward: "evaluation" } })).toThrow(/ppo.reward: "evaluation" is a test-time model/);
    // resumable like every stage: a completed run is not run again
    const again = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(again.rm).toMatchObject(s.rm!);
  }, 120_000);

  it("trains only a DP reward model on preference pairs from a file, measured on a public held-out slice", async () => {
    const lines = Array.from({ length: 60 }, (_, i) => JSON.stringify({ prompt: `review ${i}: the film was`, chosen: `great and fun ${i}`, rejected: `awful and boring ${i}` }));
    writeFileSync(join(dataDir, "prefs.jsonl"), lines.join("\n") + "\n");
    const cfg = parseConfig({
      ...TINY, scenario: "reward-model", data: { ...TINY.data, privateSize: "all", preferences: { format: "jsonl", file: "prefs.jsonl", heldOut: 10 } },
      rm: { batchSize: 10, epochs: 2, maxTokens: 24 },
    });
    const runDir = join(tmpDir(), "run-rm");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(s.plan.sft).toBeUndefined();
    expect(s.plan.rm!.datasetSize).toBe(50);
    expect(s.rm!.heldOutPairs).toBe(10);
    expect(s.evals).toEqual([]);
    expect(s.privacy.stages.map((x) => x.stage)).toEqual(["rm"]);
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals().map((t) => [t.stage, t.steps])).toEqual([["rm", s.plan.rm!.sampledBatches]]);
    // the public held-out ids are released; the private pairs are not
    const released = JSON.parse(readFileSync(join(runDir, "preferences.json"), "utf8"));
    const priv = JSON.parse(readFileSync(join(runDir, "private", "roles.json"), "utf8")).preferences.private as string[];
    expect(released.publicHeldOut).toHaveLength(10);
    for (const id of priv) expect(released.publicHeldOut).not.toContain(id);
    expect(readFileSync(join(runDir, "report.md"), "utf8")).toMatch(/## Reward model \(public held-out pairs\)/);
    // a resume on another preference file is refused
    writeFileSync(join(dataDir, "prefs.jsonl"), lines.slice(1).join("\n") + "\n");
    await expect(runPipeline({ cfg, runDir, dataDir, cacheDir, api })).rejects.toThrow(/another preference file/);
  }, 120_000);

  it("learns a learnable preference non-privately (held-out accuracy clearly above chance), and resumes an interrupted reward-model stage", async () => {
    const lines = Array.from({ length: 120 }, (_, i) => JSON.stringify({ prompt: `review ${i}: it was`, chosen: i % 2 ? "great great fun" : "wonderful and loved", rejected: i % 2 ? "awful awful boring" : "terrible waste" }));
    writeFileSync(join(dataDir, "learnable.jsonl"), lines.join("\n") + "\n");
    const base = {
      ...TINY, scenario: "reward-model", data: { ...TINY.data, privateSize: "all", preferences: { format: "jsonl", file: "learnable.jsonl", heldOut: 20 } },
      rm: { batchSize: 10, epochs: 3, lr: 0.01, maxTokens: 16 }, checkpointEvery: 5,
    } as const;
    const np = await runPipeline({ cfg: parseConfig({ ...base, privacy: { epsilon: "inf" } }), runDir: join(tmpDir(), "run-np"), dataDir, cacheDir, api });
    expect(np.rm!.heldOutAccuracy).toBeGreaterThanOrEqual(0.8);
    // DP, interrupted after 4 batches and resumed: the ledger accounts every batch once
    const cfg = parseConfig(base);
    const runDir = join(tmpDir(), "run-rm-resume");
    await expect(runPipeline({ cfg, runDir, dataDir, cacheDir, api, hooks: { stopAfter: { stage: "rm", batches: 7 } } })).rejects.toBeInstanceOf(InterruptedError);
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals()[0].steps).toBe(5);
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals()[0].steps).toBe(s.plan.rm!.sampledBatches);
    const steps = readFileSync(join(runDir, "private", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
    expect(steps).toEqual([0, 1, 2, 3, 4, 5, 6, ...Array.from({ length: s.plan.rm!.sampledBatches - 5 }, (_, i) => 5 + i)]);
  }, 180_000);

  it("resumes an interrupted stage from its last checkpoint without re-running or re-accounting batches", async () => {
    const cfg = parseConfig({ ...TINY, sft: { batchSize: 5, epochs: 1, maxTokens: 16 } });
    const runDir = join(tmpDir(), "run");
    await expect(runPipeline({ cfg, runDir, dataDir, cacheDir, api, hooks: { stopAfter: { stage: "sft", batches: 2 } } })).rejects.toBeInstanceOf(InterruptedError);
    expect(existsSync(join(runDir, "stages", "sft.json"))).toBe(false);
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals()[0].steps).toBe(2);
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api });
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals().find((t) => t.stage === "sft")!.steps).toBe(s.plan.sft.sampledBatches);
    const sftSteps = readFileSync(join(runDir, "private", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((m) => m.stage === "sft").map((m) => m.step);
    expect(sftSteps).toEqual(Array.from({ length: s.plan.sft.sampledBatches }, (_, i) => i));
    expect(s.privacy.stages.find((x) => x.stage === "sft")!.batchesExecuted).toBe(s.plan.sft.sampledBatches);
    // a run directory made with another config is refused, naming what differs
    await expect(runPipeline({ cfg: { ...cfg, seed: 5 }, runDir, dataDir, cacheDir, api })).rejects.toThrow(/different config \(seed differ/);
  }, 120_000);

  it("accounts, and does not run again, batches recorded in the ledger before a crash kept them out of the checkpoint", async () => {
    const cfg = parseConfig({ ...TINY, sft: { batchSize: 5, epochs: 1, maxTokens: 16 }, checkpointEvery: 2 });
    const runDir = join(tmpDir(), "run");
    await expect(runPipeline({ cfg, runDir, dataDir, cacheDir, api, hooks: { crashAfterLedger: { stage: "sft", batches: 4 } } })).rejects.toBeInstanceOf(InterruptedError);
    const manifest = JSON.parse(readFileSync(join(runDir, "checkpoints", "sft", "last", "manifest.json"), "utf8"));
    expect(manifest.metadata.batches).toBe("2");
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals()[0].steps).toBe(4);
    const logs: string[] = [];
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api, progress: { start() {}, update() {}, stop() {}, log: (l) => logs.push(l) } });
    expect(logs.join("\n")).toMatch(/accounts batches 3-4 that the last checkpoint does not hold/);
    const steps = readFileSync(join(runDir, "private", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((m) => m.stage === "sft").map((m) => m.step);
    // batches 2 and 3 ran once before the crash and were not run again
    expect(steps).toEqual(Array.from({ length: s.plan.sft.sampledBatches }, (_, i) => i));
    expect(new PrivacyLedger(join(runDir, "ledger.jsonl")).totals()[0].steps).toBe(s.plan.sft.sampledBatches);
  }, 120_000);

  it("sweeps an epsilon grid, skips complete runs, and writes the table", async () => {
    const cfg = parseConfig({ ...TINY, sweep: { epsilons: ["inf", 8], seeds: [1] }, nonPrivate: { ppo: { whitenAdvantages: "batch", klControl: "adaptive" } } });
    const root = join(tmpDir(), "sweep");
    const first = await runSweep({ cfg, root, dataDir, cacheDir, api });
    // eps = inf twice: the nonPrivate recipe, and the DP settings (the recovery ratio's reference)
    expect(first.cells).toHaveLength(3);
    expect(first.markdown).toMatch(/\| model \| eps=0 \| eps=8 \| eps=inf \| eps=inf \(DP settings\) \|/);
    const runCfg = (d: string) => JSON.parse(readFileSync(join(root, d, "config.json"), "utf8")) as { nonPrivate: { ppo: Record<string, unknown> } };
    expect(runCfg("epsinf-seed1").nonPrivate.ppo.whitenAdvantages).toBe("batch");
    expect(runCfg("epsinf-dpsettings-seed1").nonPrivate.ppo).toEqual({});
    const mtime = readFileSync(join(root, "eps8-seed1", "summary.json"), "utf8");
    const second = await runSweep({ cfg, root, dataDir, cacheDir, api });
    expect(second.cells).toEqual(first.cells);
    expect(readFileSync(join(root, "eps8-seed1", "summary.json"), "utf8")).toBe(mtime);
    expect(existsSync(join(root, "table.json"))).toBe(true);
  }, 120_000);
});
