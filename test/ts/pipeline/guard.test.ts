import { describe, expect, it } from "vitest";
import { DpStageGuard } from "../../../ts/pipeline/dp-step.js";
import { RunDir } from "../../../ts/pipeline/run-dir.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { planRun } from "../../../ts/pipeline/plan.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";
import { BudgetExceededError } from "../../../ts/util/errors.js";
import type { TrainStepReply } from "../../../ts/transport/messages.js";
import { tmpDir } from "./helpers.js";

const plan = planRun(parseConfig({ data: { privateSize: 1000 }, sft: { batchSize: 100, epochs: 1 }, ppo: { batchSize: 100, miniBatchSize: 100, epochs: 0.2 }, privacy: { accountant: "rdp", secureNoise: false } }), accountantCalibrator);
const reply = (over: Partial<TrainStepReply> = {}): TrainStepReply => ({
  step: 1, examples: 3, loss: 1, gradNormQuantiles: [0, 0, 0, 0, 0], fractionClipped: 0, noiseMultiplier: plan.sft.sigma, maxGradNorm: 1,
  dp: true, noiseMode: "seeded", noiseSeed: 1, noiseStd: plan.sft.sigma, metrics: {}, ...over,
});

describe("DP stage guard", () => {
  it("stops the run before a batch beyond the calibrated plan", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), false, 7n, "rdp");
    for (let t = 0; t < plan.sft.sampledBatches; t++) {
      g.beforeBatch();
      g.afterBatch();
    }
    expect(() => g.beforeBatch()).toThrow(BudgetExceededError);
  });
  it("refuses a step the worker ran with another sigma, clip norm, or without DP", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), false, 7n, "rdp");
    expect(() => g.checkReply(reply(), 3)).not.toThrow();
    expect(() => g.checkReply(reply({ noiseMultiplier: plan.sft.sigma / 2 }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply({ maxGradNorm: 2 }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply({ dp: false }), 3)).toThrow(BudgetExceededError);
    expect(() => g.checkReply(reply(), 4)).toThrow(/4 were sampled/);
  });
  it("passes q*N as the expected batch size and a seed only in reproducible mode", () => {
    const g = new DpStageGuard(plan.sft, new RunDir(tmpDir()), false, 7n, "rdp");
    expect(g.dpSpec(0)).toMatchObject({ enabled: true, noiseMultiplier: plan.sft.sigma, expectedBatchSize: 100, secureNoise: false });
    expect(g.dpSpec(0).noiseSeed).toBeDefined();
    const secure = new DpStageGuard(plan.sft, new RunDir(tmpDir()), true, 7n, "rdp");
    expect(secure.dpSpec(0).noiseSeed).toBeUndefined();
  });
  it("resumes its count from the stage's committed batches", () => {
    const run = new RunDir(tmpDir());
    const g = new DpStageGuard(plan.sft, run, false, 7n, "rdp");
    g.beforeBatch(); g.afterBatch(); g.beforeBatch(); g.afterBatch();
    g.commit();
    g.beforeBatch(); g.afterBatch(); // not committed: lost with the interrupted process
    expect(new DpStageGuard(plan.sft, run, false, 7n, "rdp").done).toBe(2);
  });
  it("in sequential mode composes this stage with what earlier stages executed", () => {
    const seq = planRun(parseConfig({ data: { privateSize: 1000 }, sft: { batchSize: 100, epochs: 1 }, ppo: { batchSize: 100, miniBatchSize: 100, epochs: 1 }, privacy: { accountant: "rdp", secureNoise: false, composition: "sequential" } }), accountantCalibrator);
    const run = new RunDir(tmpDir());
    const sft = new DpStageGuard(seq.sft, run, false, 7n, "rdp", seq);
    for (let t = 0; t < seq.sft.sampledBatches; t++) { sft.beforeBatch(); sft.afterBatch(); }
    sft.commit();
    // PPO with its planned noise fits next to SFT's executed batches ...
    const ppo = new DpStageGuard(seq.ppo, run, false, 8n, "rdp", seq);
    for (let t = 0; t < seq.ppo.sampledBatches; t++) { ppo.beforeBatch(); ppo.afterBatch(); }
    // ... but the same PPO with far less noise would not: the guard stops it before the budget is exceeded.
    const noisy = { ...seq.ppo, sigmaEffective: seq.ppo.sigmaEffective / 4, sigma: seq.ppo.sigma / 4 };
    const greedy = new DpStageGuard(noisy, run, false, 9n, "rdp", seq);
    expect(() => { for (let t = 0; t < seq.ppo.sampledBatches; t++) { greedy.beforeBatch(); greedy.afterBatch(); } }).toThrow(BudgetExceededError);
  });
});
