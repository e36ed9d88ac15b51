/**
 * runSft and runPpo against a fake worker, in milliseconds: what each stage asks the worker for
 * (Poisson batches, DP specs, T_PPO steps per mini-batch), the ledger it writes, resumption, and
 * the refusal of a worker that ran another mechanism.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { parseConfig, type Config } from "../../../ts/pipeline/config.js";
import { planRun } from "../../../ts/pipeline/plan.js";
import { RunDir } from "../../../ts/pipeline/run-dir.js";
import { runSft } from "../../../ts/pipeline/stages/sft.js";
import { runPpo } from "../../../ts/pipeline/stages/ppo.js";
import { InterruptedError } from "../../../ts/pipeline/run-errors.js";
import type { PipelineContext } from "../../../ts/pipeline/context.js";
import { silentProgress } from "../../../ts/pipeline/progress.js";
import { KeyedRng } from "../../../ts/util/keyed-rng.js";
import { RewardModel } from "../../../ts/worker/roles.js";
import { PrivacyLedger } from "../../../ts/privacy/index.js";
import { BudgetExceededError } from "../../../ts/util/errors.js";
import { FakeWorker } from "./fake-worker.js";
import { tmpDir } from "./helpers.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";

const N = 400;
const rows = Array.from({ length: N }, (_, i) => [2, 3 + (i % 5), 4, 5 + (i % 3)]);

const cfg: Config = parseConfig({
  data: { privateSize: 2 * N }, checkpointEvery: 4, privacy: { accountant: "rdp" },
  sft: { batchSize: 40, epochs: 1 }, ppo: { batchSize: 40, miniBatchSize: 20, epochs: 0.5, ppoEpochs: 2, responseTokens: [2, 3] },
});
const plan = planRun(cfg, accountantCalibrator);

function context(fake: FakeWorker, run = new RunDir(tmpDir())): PipelineContext {
  const api = fake.api();
  return {
    api, cfg, plan, run, progress: silentProgress, rng: new KeyedRng(randomBytes(32)), secretMode: "secure", showPrivate: false,
    stop: { requested: false }, roles: undefined as never, cacheDir: tmpDir(), base: { tokenizerDir: "", checkpoint: "", padId: 0, eosId: 1 },
    reward: new RewardModel(api, "reward"),
  };
}

describe("runSft with a fake worker", () => {
  it("trains one Poisson-sampled batch per planned step with the planned mechanism, and ledgers every commit", async () => {
    const fake = new FakeWorker();
    const ctx = context(fake);
    const t0 = Date.now();
    const r = await runSft(ctx, rows);
    expect(Date.now() - t0).toBeLessThan(2000);
    const steps = fake.trainSteps("sft");
    expect(steps).toHaveLength(ctx.plan.sft.sampledBatches);
    const sizes = steps.map((s) => s.batch.input_ids.shape[0]);
    expect(new Set(sizes).size).toBeGreaterThan(1); // Poisson: sizes vary
    const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
    expect(Math.abs(mean - 40)).toBeLessThan(4 * Math.sqrt(40 * 0.9 / sizes.length) + 1);
    for (const s of steps) {
      expect(s.loss).toBe("causal_lm");
      expect(s.dp).toMatchObject({ enabled: true, noiseMultiplier: ctx.plan.sft.sigma, maxGradNorm: 1, expectedBatchSize: 40, secureNoise: true });
    }
    const recs = new PrivacyLedger(ctx.run.path("ledger.jsonl")).read();
    expect(recs.map((x) => [x.from_batch, x.to_batch])).toEqual([[0, 4], [4, 8], [8, 10]]);
    expect(r.checkpoint).toBe("checkpoints/sft/last");
    // each checkpoint is saved after its ledger record, and names it
    const saves = fake.calls.filter((c) => c.method === "saveCheckpoint").map((c) => (c.request as { metadata: Record<string, string> }).metadata);
    expect(saves.map((m) => m.batches)).toEqual(["4", "8", "10"]);
    expect(saves.map((m) => m.ledger_head)).toEqual(new PrivacyLedger(ctx.run.path("ledger.jsonl")).hashes());
  });

  it("resumes after an interruption without re-running committed batches", async () => {
    const fake = new FakeWorker();
    const run = new RunDir(tmpDir());
    const ctx = context(fake, run);
    await expect(runSft(ctx, rows, { stopAfter: { stage: "sft", batches: 6 } })).rejects.toBeInstanceOf(InterruptedError);
    // 6 ran, 4 committed; the 2 after the commit were never released and run again
    const again = new FakeWorker();
    await runSft({ ...ctx, api: again.api() }, rows);
    expect(again.trainSteps("sft")).toHaveLength(ctx.plan.sft.sampledBatches - 4);
    expect(new PrivacyLedger(run.path("ledger.jsonl")).totals()[0].steps).toBe(ctx.plan.sft.sampledBatches);
  });

  it("stops when the worker reports another mechanism", async () => {
    const fake = new FakeWorker();
    fake.tamper = (r) => ({ ...r, noiseMultiplier: r.noiseMultiplier / 10 });
    await expect(runSft(context(fake), rows)).rejects.toBeInstanceOf(BudgetExceededError);
    const examples = new FakeWorker();
    examples.tamper = (r) => ({ ...r, examples: r.examples + 1 });
    await expect(runSft(context(examples), rows)).rejects.toThrow(/different number of examples/);
  });

  it("stops at the next commit when a stop is requested, with the ledger and checkpoint saved", async () => {
    const fake = new FakeWorker();
    const ctx = context(fake);
    fake.tamper = (r) => {
      if (r.step === 2) ctx.stop.requested = true;
      return r;
    };
    ctx.stop.signal = "SIGINT";
    await expect(runSft(ctx, rows)).rejects.toThrow(/stopped by SIGINT after batch 2 of 10/);
    expect(new PrivacyLedger(ctx.run.path("ledger.jsonl")).totals()[0].steps).toBe(2);
  });
});

describe("runPpo with a fake worker", () => {
  it("generates rollouts for G Poisson mini-batches per round and takes T_PPO noisy steps on each", async () => {
    const fake = new FakeWorker();
    const ctx = context(fake);
    const t0 = Date.now();
    await runPpo(ctx, rows, "checkpoints/sft/last");
    expect(Date.now() - t0).toBeLessThan(3000);
    const plan = ctx.plan.ppo;
    const steps = fake.trainSteps("policy");
    expect(steps).toHaveLength(plan.sampledBatches * plan.reuse);
    // the K steps of a mini-batch train on the same rows
    for (let i = 0; i < steps.length; i += 2) {
      expect(steps[i].batch.query_ids.shape).toEqual(steps[i + 1].batch.query_ids.shape);
      expect(Array.from(steps[i].batch.query_ids.toNumbers())).toEqual(Array.from(steps[i + 1].batch.query_ids.toNumbers()));
    }
    for (const s of steps) {
      expect(s.loss).toBe("ppo");
      expect(s.ppo).toEqual({ clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.1 });
      expect(s.dp.noiseMultiplier).toBeCloseTo(plan.sigmaEffective * Math.sqrt(2));
      expect(s.dp.expectedBatchSize).toBe(20);
    }
    const gens = fake.calls.filter((c) => c.method === "generate").length;
    expect(gens).toBe(Math.ceil(plan.sampledBatches / plan.miniBatchesPerRollout));
    const recs = new PrivacyLedger(ctx.run.path("ledger.jsonl")).read();
    expect(recs.reduce((a, x) => a + x.steps, 0)).toBe(plan.sampledBatches);
    expect(recs.every((x) => x.reuse === 2 && x.noise === "secure")).toBe(true);
    const metrics = ctx.run.readJsonl<{ stage: string }>("private/metrics.jsonl");
    expect(metrics.filter((m) => m.stage === "ppo").length).toBe(Math.ceil(plan.sampledBatches / plan.miniBatchesPerRollout));
  });
});
