import { describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig, loadConfigFile, effectiveStages } from "../../../ts/pipeline/config.js";
import { modelSpec } from "../../../ts/pipeline/context.js";
import { planRun, formatPlan } from "../../../ts/pipeline/plan.js";
import { cyclingBatches, poissonSample, shuffledBatches } from "../../../ts/pipeline/sampling.js";
import { SeededRng } from "../../../ts/util/rng.js";
import { ConfigError } from "../../../ts/util/errors.js";
import { fakeCalibrator, tmpDir } from "./helpers.js";

describe("config schema", () => {
  it("fills defaults and accepts eps = inf spelled several ways", () => {
    const c = parseConfig({});
    expect(c.privacy.epsilon).toBe(4);
    expect(c.ppo.ppoEpochs).toBe(1);
    expect(parseConfig({ privacy: { epsilon: "inf" } }).privacy.epsilon).toBe(Infinity);
    expect(parseConfig({ sweep: { epsilons: [".inf", 8] } }).sweep.epsilons).toEqual([Infinity, 8]);
  });
  it("names the field in errors", () => {
    expect(() => parseConfig({ ppo: { miniBatchSize: -3 } })).toThrow(/ppo\.miniBatchSize/);
    expect(() => parseConfig({ ppo: { klControl: "magic" } })).toThrow(/ppo\.klControl/);
    expect(() => parseConfig({ sft: { lerning_rate: 1 } })).toThrow(/sft: unknown field\(s\) "lerning_rate"/);
    expect(() => parseConfig({ privacy: { epsilon: 0 } })).toThrow(/privacy\.epsilon/);
    expect(() => parseConfig({ model: { tiny: { nEmbd: 65, nHead: 2 } } })).toThrow(/model\.tiny\.nEmbd: must be divisible/);
    expect(() => parseConfig({ model: { kind: "hf" } })).toThrow(/model\.hfPath: required/);
    expect(() => parseConfig({ ppo: { responseTokens: [16, 4] } })).toThrow(/ppo\.responseTokens/);
  });
  it("reads the reward model's pooling: last by default, mean on request, and only reward heads carry it", () => {
    expect(parseConfig({}).rm.pooling).toBe("last");
    const cfg = parseConfig({ rm: { pooling: "mean" } });
    expect(() => parseConfig({ rm: { pooling: "max" } })).toThrow(/rm\.pooling/);
    const base = { tokenizerDir: "/tok", checkpoint: "/base" };
    expect(modelSpec(cfg, base, { lora: true, rewardHead: true, rewardPooling: cfg.rm.pooling }).rewardPooling).toBe("mean");
    expect(modelSpec(cfg, base, { rewardHead: true }).rewardPooling).toBeUndefined(); // the worker's default: last
    expect(modelSpec(cfg, base, { valueHead: true, rewardPooling: "mean" }).rewardPooling).toBeUndefined();
  });
  it("says what epsilon may be: a number in (0, 100] or \"inf\"", () => {
    expect(() => parseConfig({ privacy: { epsilon: "four" } })).toThrow(/privacy\.epsilon: expected a positive number or "inf"/);
    expect(() => parseConfig({ privacy: { epsilon: 1e9 } })).toThrow(/privacy\.epsilon: must be in \(0, 100\] or "inf" \(a non-private run\), got 1000000000/);
    expect(() => parseConfig({ privacy: { epsilon: -1 } })).toThrow(/privacy\.epsilon: must be in \(0, 100\]/);
    expect(() => parseConfig({ sweep: { epsilons: [8, 1e9] } })).toThrow(/sweep\.epsilons\.1: must be in \(0, 100\]/);
    expect(parseConfig({ privacy: { epsilon: 100 } }).privacy.epsilon).toBe(100);
  });
  it("loads YAML and JSON files and reports parse errors with the file and line", () => {
    const dir = tmpDir();
    const y = join(dir, "a.yaml");
    writeFileSync(y, "name: t\nprivacy:\n  epsilon: .inf\nppo:\n  ppoEpochs: 2\n");
    const c = loadConfigFile(y);
    expect(c.privacy.epsilon).toBe(Infinity);
    expect(c.ppo.ppoEpochs).toBe(2);
    const j = join(dir, "b.json");
    writeFileSync(j, JSON.stringify({ sft: { epochs: 2 } }));
    expect(loadConfigFile(j).sft.epochs).toBe(2);
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "name: t\nppo:\n  batchSize: [1,\n");
    expect(() => loadConfigFile(bad)).toThrow(ConfigError);
    expect(() => loadConfigFile(bad)).toThrow(new RegExp(`${bad.replace(/[.]/g, "\\.")}:\\d+`));
    const list = join(dir, "list.yaml");
    writeFileSync(list, "- 1\n- 2\n");
    expect(() => loadConfigFile(list)).toThrow(/mapping/);
    const wrong = join(dir, "wrong.yaml");
    writeFileSync(wrong, "sft:\n  batchSize: big\n");
    expect(() => loadConfigFile(wrong)).toThrow(/wrong\.yaml: invalid config\n  sft\.batchSize/);
    expect(() => loadConfigFile(join(dir, "missing.yaml"))).toThrow(/no such config file/);
    expect(() => loadConfigFile(dir)).toThrow(ConfigError);
    expect(() => loadConfigFile(dir)).toThrow(/: is a directory; give a YAML or JSON config file/);
  });
  it("applies the non-private overrides only at eps = inf", () => {
    const raw = { nonPrivate: { ppo: { miniBatchSize: 16, ppoEpochs: 4, whitenAdvantages: "batch" } } };
    expect(effectiveStages(parseConfig(raw)).ppo.ppoEpochs).toBe(1);
    const np = effectiveStages(parseConfig({ ...raw, privacy: { epsilon: "inf" } }));
    expect(np.ppo.ppoEpochs).toBe(4);
    expect(np.ppo.whitenAdvantages).toBe("batch");
  });
});

describe("plan", () => {
  const base = { data: { privateSize: 1000 }, sft: { batchSize: 50, epochs: 2 }, ppo: { batchSize: 100, miniBatchSize: 20, epochs: 1, ppoEpochs: 2 } };
  it("derives N, q, steps, delta and sigma per stage in DP mode", () => {
    const p = planRun(parseConfig(base), fakeCalibrator);
    expect(p.dp).toBe(true);
    // the default delta is min(1/|D|^1.1, 1e-6); "1/n" gives the paper's 1/|D|
    expect(p.delta).toBe(1e-6);
    expect(p.deltaRule).toBe("default");
    expect(planRun(parseConfig({ ...base, data: { privateSize: 100 } , sft: { batchSize: 10, epochs: 1 }, ppo: { batchSize: 10, miniBatchSize: 5, epochs: 1 } }), fakeCalibrator).delta).toBe(1e-6);
    const paper = planRun(parseConfig({ ...base, privacy: { delta: "1/n" } }), fakeCalibrator);
    expect(paper.delta).toBeCloseTo(1e-3);
    expect(paper.notes.join("\n")).toMatch(/1\/\|D\| .* as in the paper; the default .* is safer/);
    expect(p.sizes).toMatchObject({ privateD: 1000, d1: 500, d3: 500 });
    expect(p.sft).toMatchObject({ datasetSize: 500, q: 0.1, sampledBatches: 20, reuse: 1, optimizerSteps: 20 });
    expect(p.ppo).toMatchObject({ datasetSize: 500, q: 0.04, sampledBatches: 25, reuse: 2, optimizerSteps: 50 });
    // T_PPO = K reuse: the step's sigma is sigma_eff * sqrt(K)
    expect(p.ppo.sigma).toBeCloseTo(p.ppo.sigmaEffective * Math.sqrt(2));
    expect(formatPlan(p)).toMatch(/SFT: N 500.*sigma/);
  });
  it("splits the budget between stages that share users (sequential composition)", () => {
    const p = planRun(parseConfig({ ...base, privacy: { composition: "sequential" } }), fakeCalibrator);
    expect(p.composition).toBe("sequential");
    expect(p.sizes).toMatchObject({ d1: 1000, d3: 1000 });
    // each stage gets a share; the composition of both meets the target
    expect(p.sft.epsilonPlanned).toBeLessThan(4);
    expect(p.ppo.epsilonPlanned).toBeLessThan(4);
    expect(p.composed.epsilon).toBeLessThanOrEqual(4 * (1 + 1e-9));
    expect(p.sft.epsilonTarget).toBe(p.sft.epsilonPlanned);
    expect(p.composed.rule).toMatch(/sequential/);
    const par = planRun(parseConfig(base), fakeCalibrator);
    expect(p.sft.sigmaEffective).toBeGreaterThan(par.sft.sigmaEffective * 0.99);
  });
  it("plans three stages for the RLHF scenario: D1/D2/D3 in parallel, or the budget split three ways", () => {
    const rlhf = { ...base, scenario: "rlhf", data: { privateSize: 1000, sftFraction: 0.4, rmFraction: 0.3 }, rm: { batchSize: 30, epochs: 2 } };
    const p = planRun(parseConfig(rlhf), fakeCalibrator);
    expect(p.sizes).toMatchObject({ d1: 400, d2: 300, d3: 300 });
    expect(p.rm).toMatchObject({ stage: "rm", datasetSize: 300, q: 0.1, sampledBatches: 20, reuse: 1 });
    expect(p.composed.epsilon).toBe(Math.max(p.sft.epsilonPlanned, p.rm!.epsilonPlanned, p.ppo.epsilonPlanned));
    expect(p.composed.rule).toMatch(/D1, D2 and D3 are disjoint per record/);
    expect(formatPlan(p)).toMatch(/RM: N 300, expected batch 30/);
    const seq = planRun(parseConfig({ ...rlhf, privacy: { composition: "sequential" } }), fakeCalibrator);
    expect(seq.sizes).toMatchObject({ d1: 1000, d2: 1000, d3: 1000 });
    for (const st of [seq.sft, seq.rm!, seq.ppo]) expect(st.epsilonPlanned).toBeLessThan(4);
    expect(seq.composed.epsilon).toBeLessThanOrEqual(4 * (1 + 1e-9));
    expect(seq.notes.join("\n")).toMatch(/split between SFT .*, RM .*, PPO/);
    expect(() => parseConfig({ ...rlhf, data: { sftFraction: 0.6, rmFraction: 0.5 } })).toThrow(/data.rmFraction: data.sftFraction \+ data.rmFraction must be below 1/);
    // the classifier scenario has no reward-model stage
    expect(planRun(parseConfig(base), fakeCalibrator).rm).toBeUndefined();
  });
  it("uses all of D for both stages when non-private", () => {
    const p = planRun(parseConfig({ ...base, privacy: { epsilon: "inf" } }), fakeCalibrator);
    expect(p.sizes).toMatchObject({ d1: 1000, d3: 1000 });
    expect(p.ppo).toMatchObject({ sampledBatches: 50, reuse: 2, optimizerSteps: 100, sigma: 0 });
    expect(p.composed.epsilon).toBe(Infinity);
  });
  it("refuses coupling statistics and inconsistent sizes in DP mode", () => {
    expect(() => planRun(parseConfig({ ...base, ppo: { ...base.ppo, klControl: "adaptive" } }), fakeCalibrator)).toThrow(/ppo\.klControl.*refused in DP mode/);
    expect(() => planRun(parseConfig({ ...base, ppo: { ...base.ppo, whitenAdvantages: "batch" } }), fakeCalibrator)).toThrow(/ppo\.whitenAdvantages/);
    expect(() => planRun(parseConfig({ ...base, ppo: { ...base.ppo, rewardNormalization: "batch" } }), fakeCalibrator)).toThrow(/ppo\.rewardNormalization/);
    expect(() => planRun(parseConfig({ ...base, ppo: { ...base.ppo, batchSize: 90 } }), fakeCalibrator)).toThrow(/multiple of ppo\.miniBatchSize/);
    expect(() => planRun(parseConfig({ ...base, sft: { batchSize: 600 } }), fakeCalibrator)).toThrow(/sft\.batchSize/);
    expect(() => planRun(parseConfig({ data: { privateSize: 30000 } }), fakeCalibrator)).toThrow(/data\.privateSize/);
    // non-private runs may whiten and adapt the KL coefficient
    expect(planRun(parseConfig({ ...base, privacy: { epsilon: "inf" }, ppo: { ...base.ppo, klControl: "adaptive", whitenAdvantages: "batch" } }), fakeCalibrator).dp).toBe(false);
  });
});

describe("sampling", () => {
  it("Poisson batches vary in size, average q*n and may be empty", () => {
    const rng = new SeededRng(1);
    for (const q of [0.02, 0.3]) {
      const sizes = Array.from({ length: 400 }, () => poissonSample(500, q, rng).length);
      const mean = sizes.reduce((a, b) => a + b, 0) / sizes.length;
      expect(mean).toBeGreaterThan(q * 500 * 0.9);
      expect(mean).toBeLessThan(q * 500 * 1.1);
      expect(new Set(sizes).size).toBeGreaterThan(3);
    }
    const tiny = Array.from({ length: 200 }, () => poissonSample(10, 0.05, rng).length);
    expect(tiny).toContain(0);
    const s = poissonSample(1000, 0.05, new SeededRng(3));
    expect(s).toEqual(poissonSample(1000, 0.05, new SeededRng(3)));
    expect([...s].sort((a, b) => a - b)).toEqual(s);
    expect(() => poissonSample(10, 1.5, rng)).toThrow(/sampling rate/);
  });
  it("shuffled batches partition the index set", () => {
    const b = shuffledBatches(10, 4, new SeededRng(2));
    expect(b.map((x) => x.length)).toEqual([4, 4, 2]);
    expect(b.flat().sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
  it("cycling batches are full-size, distinct within a pass, and reshuffle when a pass runs out", () => {
    const next = cyclingBatches(10, 4, new SeededRng(3));
    const pass = [next(), next()];
    expect(pass.map((x) => x.length)).toEqual([4, 4]);
    expect(new Set(pass.flat()).size).toBe(8);
    const third = next(); // only 2 left: a fresh shuffle of all 10
    expect(third).toHaveLength(4);
    expect(third.every((i) => i >= 0 && i < 10)).toBe(true);
  });
});
