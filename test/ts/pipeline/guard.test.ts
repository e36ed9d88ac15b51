import { describe, expect, it } from "vitest";
import { DpStageGuard } from "../../../ts/pipeline/dp-step.js";
import { RunDir } from "../../../ts/pipeline/run-dir.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { planRun } from "../../../ts/pipeline/plan.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";
import { BudgetExceededError } from "../../../ts/util/errors.js";
import type { TrainStepReply } from "../../../ts/protocol/messages.js";
import { tmpDir } from "./helpers.js";
import { RunIntegrityError } from "../../../ts/pipeline/run-errors.js";
import { PrivacyLedger } from "../../../ts/privacy/index.js";
import type { NoiseSource } from "../../../ts/pipeline/dp-step.js";

const seeded = (seed: bigint): NoiseSource => ({ mode: "seeded", seed });

const plan = planRun(parseConfig({ data: { privateSize: 1000 }, sft: { batchSize: 100, epochs: 1 }, ppo: { batchSize: 100, miniBatchSize: 100, epochs: 0.2 }, privacy: { accountant: "rdp", reproducible: true } }), accountantCalibrator);
const reply = (over: Partial<TrainStepReply> = {}): TrainStepReply => ({
  step: 1, examples: 3, loss: 1, gradNormQuantiles: [0, 0, 0, 0, 0], fractionClipped: 0, noiseMultiplier: plan.sft.sigma, maxGradNorm: 1,
  dp: true, noiseMode: "seeded", noiseSeed: 1, noiseStd: plan.sft.sigma, metrics: {}, ...over,
});

describe("DP stage guard", () => {
  it("stops the run before a batch beyond the calibrated plan", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), seeded(7n), "rdp");
    for (let t = 0; t < plan.sft.sampledBatches; t++) {
      g.beforeBatch();
      g.afterBatch();
    }
    expect(() => g.beforeBatch()).toThrow(BudgetExceededError);
  });
  it("refuses a step the worker ran with another sigma, clip norm, or without DP", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), seeded(7n), "rdp");
    expect(() => g.checkReply(reply(), 3)).not.toThrow();
    expect(() => g.checkReply(reply({ noiseMultiplier: plan.sft.sigma / 2 }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply({ maxGradNorm: 2 }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply({ dp: false }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply(), 4)).toThrow(/different number of examples/);
    expect(() => g.checkReply(reply({ noiseMode: "secure" }), 3)).toThrow(/noise mode/);
  });
  it("passes q*N as the expected batch size and a seed only in reproducible mode", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), seeded(7n), "rdp");
    expect(g.dpSpec(0)).toMatchObject({ enabled: true, noiseMultiplier: plan.sft.sigma, expectedBatchSize: 100, secureNoise: false });
    expect(g.dpSpec(0).noiseSeed).toBeDefined();
    const secure = new DpStageGuard(plan.sft, new RunDir(tmpDir()), { mode: "secure" }, "rdp");
    expect(secure.dpSpec(0).noiseSeed).toBeUndefined();
  });
  it("resumes its count from the batches the ledger accounts, and records hash-chained, contiguous ranges", () => {
    const run = new RunDir(tmpDir());
    const g = new DpStageGuard(plan.sft, run, seeded(7n), "rdp");
    g.beforeBatch(); g.afterBatch(); g.beforeBatch(); g.afterBatch();
    const head = g.record();
    expect(head).toMatch(/^[0-9a-f]{64}$/);
    g.beforeBatch(); g.afterBatch(); // not recorded: lost with the interrupted process
    const again = new DpStageGuard(plan.sft, run, seeded(7n), "rdp");
    expect(again.done).toBe(2);
    again.verifyCheckpoint(2, head, [head]);
    // a checkpoint ahead of the ledger, or bound to a line the ledger lacks, is refused
    expect(() => again.verifyCheckpoint(3, head, [head])).toThrow(RunIntegrityError);
    expect(() => again.verifyCheckpoint(2, "f".repeat(64), [head])).toThrow(RunIntegrityError);
    again.beforeBatch(); again.afterBatch();
    again.record();
    const recs = new PrivacyLedger(run.path("ledger.jsonl")).read();
    expect(recs.map((r) => [r.from_batch, r.to_batch, r.noise])).toEqual([[0, 2, "seeded"], [2, 3, "seeded"]]);
    expect(recs[1].prev).toBe(head);
  });
  it("in sequential mode composes this stage with what earlier stages executed", () => {
    const seq = planRun(parseConfig({ data: { privateSize: 1000 }, sft: { batchSize: 100, epochs: 1 }, ppo: { batchSize: 100, miniBatchSize: 100, epochs: 1 }, privacy: { accountant: "rdp", reproducible: true, composition: "sequential" } }), accountantCalibrator);
    const run = new RunDir(tmpDir());
    const sft = new DpStageGuard(seq.sft, run, seeded(7n), "rdp", seq);
    for (let t = 0; t < seq.sft.sampledBatches; t++) { sft.beforeBatch(); sft.afterBatch(); }
    sft.record();
    // PPO with its planned noise fits next to SFT's executed batches ...
    const ppo = new DpStageGuard(seq.ppo, run, seeded(8n), "rdp", seq);
    for (let t = 0; t < seq.ppo.sampledBatches; t++) { ppo.beforeBatch(); ppo.afterBatch(); }
    // ... but the same PPO with far less noise would not: the guard stops it before the budget is exceeded.
    const noisy = { ...seq.ppo, sigmaEffective: seq.ppo.sigmaEffective / 4, sigma: seq.ppo.sigma / 4 };
    const greedy = new DpStageGuard(noisy, run, seeded(9n), "rdp", seq);
    expect(() => { for (let t = 0; t < seq.ppo.sampledBatches; t++) { greedy.beforeBatch(); greedy.afterBatch(); } }).toThrow(BudgetExceededError);
  });
});
