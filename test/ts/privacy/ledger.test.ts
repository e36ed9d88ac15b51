// Ledger, budget guard, plans and composition across stages.
import { mkdtempSync, readFileSync, writeFileSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BudgetGuard, calibrateSigma, composeParallel, composeSequential, epsilon, parsePlan, PrivacyLedger, readPlanFile, splitBudget, stageMechanism } from "../../../ts/privacy/index.js";
import { BudgetExceededError, ConfigError, DataError } from "../../../ts/util/errors.js";

const dir = mkdtempSync(join(tmpdir(), "dpalign-privacy-"));
const delta = 1e-5;
const sft = { stage: "sft", mechanisms: [{ q: 0.01, sigma: 1.2, steps: 800 }] };
const rm = { stage: "reward", mechanisms: [{ q: 0.02, sigma: 1.5, steps: 400 }] };

describe("composition across stages", () => {
  it("parallel is the maximum, sequential composes everything numerically", () => {
    const a = epsilon({ mechanisms: sft.mechanisms, delta }).epsilon;
    const b = epsilon({ mechanisms: rm.mechanisms, delta }).epsilon;
    const par = composeParallel([sft, rm], delta);
    expect(par.epsilon).toBe(Math.max(a, b));
    expect(par.perStage.map((s) => s.stage)).toEqual(["sft", "reward"]);
    const seq = composeSequential([sft, rm], delta);
    expect(seq.epsilon).toBeGreaterThan(Math.max(a, b));
    expect(seq.epsilon).toBeLessThan(a + b); // tighter than basic composition
    expect(Math.abs(seq.epsilon - epsilon({ mechanisms: [...sft.mechanisms, ...rm.mechanisms], delta }).epsilon)).toBeLessThan(1e-12);
  });

  it("splits a budget: parallel gives each stage the target, sequential scales sigmas to fit", () => {
    const stages = [
      { stage: "sft", q: 0.01, steps: 500 },
      { stage: "ppo", q: 0.02, steps: 200, reuse: 4 },
    ];
    const par = splitBudget({ targetEpsilon: 2, delta, composition: "parallel", stages, accountant: "rdp" });
    for (const s of par.stages) expect(epsilon({ mechanisms: [stageMechanism(s)], delta, accountant: "rdp" }).epsilon).toBeLessThanOrEqual(2);
    const ppo = par.stages[1];
    const alone = calibrateSigma({ q: 0.02, steps: 200, targetEpsilon: 2, delta, accountant: "rdp" }).sigma;
    expect(ppo.sigma).toBeCloseTo(alone * 2, 9); // K = 4 reuse needs sqrt(4) times the noise
    const seq = splitBudget({ targetEpsilon: 2, delta, composition: "sequential", stages, accountant: "prv" });
    expect(seq.result.epsilon).toBeLessThanOrEqual(2);
    expect(seq.result.epsilon).toBeGreaterThan(1.98);
    for (let i = 0; i < 2; i++) expect(seq.stages[i].sigma!).toBeGreaterThan(par.stages[i].sigma! * 0.99);
  });
});

describe("privacy ledger", () => {
  it("appends JSON lines and reads them back with totals", () => {
    const path = join(dir, "ledger.jsonl");
    const ledger = new PrivacyLedger(path);
    ledger.append({ stage: "sft", q: 0.01, sigma: 1.2, clip: 1, steps: 400, accountant: "prv", noise: "secure" });
    ledger.append({ stage: "sft", q: 0.01, sigma: 1.2, clip: 1, steps: 400, accountant: "prv", noise: "secure" });
    ledger.append({ stage: "ppo", q: 0.02, sigma: 2, clip: 1, steps: 100, reuse: 4, accountant: "prv", noise: "seeded" });
    const lines = readFileSync(path, "utf8").trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(JSON.parse(lines[2]).noise).toBe("seeded");
    const recs = ledger.read();
    expect(recs[0].prev).toBe("");
    expect(recs[1].prev).toMatch(/^[0-9a-f]{64}$/);
    const totals = ledger.totals();
    expect(totals.map((t) => [t.stage, t.steps])).toEqual([
      ["sft", 800],
      ["ppo", 100],
    ]);
    expect(totals[1].mechanisms[0].sigma).toBe(1); // 2 / sqrt(4)
    const seq = ledger.compose("sequential", delta, "prv");
    const direct = epsilon({ mechanisms: [{ q: 0.01, sigma: 1.2, steps: 800 }, { q: 0.02, sigma: 1, steps: 100 }], delta });
    expect(Math.abs(seq.epsilon - direct.epsilon)).toBeLessThan(1e-12);
  });

  it("refuses malformed records and lines", () => {
    const path = join(dir, "bad.jsonl");
    const ledger = new PrivacyLedger(path);
    expect(() => ledger.append({ stage: "sft", q: 2, sigma: 1, clip: 1, steps: 1, accountant: "prv", noise: "secure" })).toThrow();
    writeFileSync(path, "");
    ledger.append({ stage: "sft", q: 0.5, sigma: 1, clip: 1, steps: 1, accountant: "rdp", noise: "secure" });
    appendFileSync(path, "{not json\n");
    expect(() => ledger.read()).toThrow(DataError);
    expect(() => ledger.read()).toThrow(/bad\.jsonl:2/);
  });

  it("detects a removed, edited or reordered line through the hash chain, and a cut last line", () => {
    const path = join(dir, "chain.jsonl");
    const ledger = new PrivacyLedger(path);
    for (let i = 0; i < 3; i++) ledger.append({ stage: "sft", q: 0.1, sigma: 1, clip: 1, steps: 5, accountant: "prv", noise: "secure", from_batch: 5 * i, to_batch: 5 * i + 5 });
    const good = readFileSync(path, "utf8");
    const lines = good.trim().split("\n");
    const tamper = (text: string) => {
      writeFileSync(path, text);
      return () => ledger.read();
    };
    expect(tamper([lines[0], lines[2]].join("\n") + "\n")).toThrow(/chain.jsonl:2: the hash chain is broken/);
    expect(tamper([lines[0], lines[1].replace('"sigma":1', '"sigma":2'), lines[2]].join("\n") + "\n")).toThrow(/chain.jsonl:3: the hash chain is broken/);
    expect(tamper([lines[1], lines[0], lines[2]].join("\n") + "\n")).toThrow(/hash chain is broken/);
    expect(tamper(good.slice(0, -10))).toThrow(/chain.jsonl:3: the last line is incomplete/);
    // dropping the last line keeps a valid chain: the run catches that against its checkpoint
    expect(tamper(lines.slice(0, 2).join("\n") + "\n")()).toHaveLength(2);
    writeFileSync(path, good);
    expect(ledger.read()).toHaveLength(3);
    expect(ledger.head()).toBe(ledger.hashes()[2]);
  });
});

describe("budget guard", () => {
  const plan = parsePlan({
    target_epsilon: 3,
    delta,
    composition: "parallel",
    stages: [
      { stage: "sft", sample_rate: 0.01, noise_multiplier: 1.0, steps: 1000 },
      { stage: "ppo", q: 0.02, sigma: 1.6, steps: 300, reuse: 2 },
    ],
  });

  it("accepts a plan within its target and refuses one over it", () => {
    const guard = new BudgetGuard({ targetEpsilon: 3, delta, composition: "parallel", accountant: "prv" });
    expect(guard.checkPlan(plan).epsilon).toBeLessThanOrEqual(3);
    const tight = new BudgetGuard({ targetEpsilon: 1, delta, composition: "parallel", accountant: "prv" });
    expect(() => tight.checkPlan(plan)).toThrow(BudgetExceededError);
    expect(() => tight.checkPlan(plan)).toThrow(/exceeds the target 1/);
  });

  it("stops a run before the step that would exceed the target", () => {
    const guard = new BudgetGuard({ targetEpsilon: 1, delta, composition: "sequential", accountant: "rdp" });
    const next = { q: 0.01, sigma: 1 };
    const max = guard.maxSteps([], "sft", next);
    expect(guard.canRun([{ stage: "sft", mechanisms: [{ ...next, steps: max }] }])).toBe(true);
    expect(guard.canRun([{ stage: "sft", mechanisms: [{ ...next, steps: max + 1 }] }])).toBe(false);
    expect(() => guard.beforeStep([], "sft", next, max - 1)).not.toThrow();
    expect(() => guard.beforeStep([], "sft", next, max)).toThrow(BudgetExceededError);
    // with earlier stages executed, fewer steps remain
    expect(guard.maxSteps([{ stage: "rm", mechanisms: [{ q: 0.01, sigma: 2, steps: 500 }] }], "sft", next)).toBeLessThan(max);
  });
});

describe("plan files", () => {
  it("reads YAML and JSON and names bad fields", () => {
    const y = join(dir, "plan.yaml");
    writeFileSync(y, "target_epsilon: 4\ndelta: 1.0e-5\ncomposition: sequential\nstages:\n  - {stage: sft, q: 0.01, steps: 100}\n");
    const p = readPlanFile(y);
    expect(p.composition).toBe("sequential");
    expect(p.stages[0].sigma).toBeUndefined();
    const j = join(dir, "plan.json");
    writeFileSync(j, JSON.stringify({ target_epsilon: 4, delta: 2, stages: [{ stage: "sft", q: 0.01, steps: 1.5 }] }));
    expect(() => readPlanFile(j)).toThrow(ConfigError);
    expect(() => readPlanFile(j)).toThrow(/delta/);
    expect(() => readPlanFile(j)).toThrow(/stages\.0\.steps/);
    expect(() => stageMechanism(p.stages[0])).toThrow(/no noise multiplier/);
  });
});
