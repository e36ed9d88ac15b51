import { describe, expect, it } from "vitest";
import { buildTable, renderTable } from "../../../ts/pipeline/table.js";
import { meanCi, tQuantile975 } from "../../../ts/pipeline/stages/evaluate.js";
import { sweepColumns, sweepRunConfig, sweepRunDir } from "../../../ts/pipeline/sweep.js";
import { effectiveStages, parseConfig } from "../../../ts/pipeline/config.js";
import { disjointStages, planRun, IMDB_SIZES } from "../../../ts/pipeline/plan.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";

describe("Table 1 layout", () => {
  const cells = [0, 1, 2].flatMap((seed) => [Infinity, 4, 1].map((epsilon) => ({
    epsilon, seed, pretrained: -0.3 + seed * 0.01, sft: 0.1, aligned: (Number.isFinite(epsilon) ? epsilon / 4 : 2) + seed * 0.1, wallS: 60,
  })));
  it("has an eps = 0 column for the pretrained model and mean +- 95% CI over seeds per epsilon", () => {
    const t = buildTable(cells);
    expect(t.columns.map((c) => c.label)).toEqual(["1", "4", "inf"]);
    expect(t.pretrained.mean).toBeCloseTo(-0.29);
    const four = t.columns[1];
    expect(four.aligned.mean).toBeCloseTo(1.1);
    expect(four.aligned.ci95).toBeCloseTo((tQuantile975(2) * 0.1) / Math.sqrt(3));
    const md = renderTable(t, "tiny");
    expect(md.split("\n")[0]).toBe("| model | eps=0 | eps=1 | eps=4 | eps=inf |");
    expect(md).toMatch(/\| tiny \(aligned\) \| -0\.29 \+- 0\.02 \| 0\.35 \+- 0\.25 \| 1\.10 \+- 0\.25 \| 2\.10 \+- 0\.25 \|/);
    expect(md).toMatch(/mean wall time per run/);
  });
  it("adds the reward model's accuracy and ROUGE-L rows where runs report them, and leaves out rows a scenario lacks", () => {
    const rl = cells.map((c) => ({ ...c, rmAccuracy: 0.8 + c.seed * 0.01, rougeL: { pretrained: 10, sft: 11, aligned: 12 + c.seed } }));
    const md = renderTable(buildTable(rl), "tiny");
    expect(md).toMatch(/\| reward model held-out accuracy \(%\) \| - \| 81\.00 \+- 2\.48 \|/);
    expect(md).toMatch(/\| tiny \(aligned\) ROUGE-L \| 10\.00 \+- 0\.00 \| 13\.00 \+- 2\.48 \|/);
    // scenario reward-model: no evaluation of generations, only the reward model
    const rmOnly = renderTable(buildTable(cells.map((c) => ({ ...c, pretrained: NaN, sft: NaN, aligned: NaN, rmAccuracy: 0.55 }))), "hh");
    expect(rmOnly).not.toMatch(/\(aligned\)/);
    expect(rmOnly).toMatch(/reward model held-out accuracy \(%\) \| - \| 55\.00/);
  });
  it("adds the like-for-like eps = inf column and the recovery ratio per seed against it", () => {
    // per seed: pretrained p, inf (DP settings) p + 1, eps 4 p + 0.5 + 0.1 seed, inf (own recipe) p + 2
    const lf = [0, 1, 2].flatMap((seed) => {
      const p = 0.1 * seed;
      return [
        { epsilon: Infinity, seed, pretrained: p, sft: p, aligned: p + 2, wallS: 1 },
        { epsilon: Infinity, seed, pretrained: p, sft: p, aligned: p + 1, wallS: 1, dpSettings: true },
        { epsilon: 4, seed, pretrained: p, sft: p, aligned: p + 0.5 + 0.1 * seed, wallS: 1 },
      ];
    });
    const t = buildTable(lf);
    expect(t.columns.map((c) => c.label)).toEqual(["4", "inf", "inf (DP settings)"]);
    const four = t.columns[0];
    expect(four.recovery.mean).toBeCloseTo(0.6); // 0.5, 0.6, 0.7
    expect(four.recovery.ci95).toBeCloseTo((tQuantile975(2) * 0.1) / Math.sqrt(3));
    expect(t.columns[1].recovery.mean).toBeCloseTo(2); // the own recipe against the like-for-like reference
    expect(Number.isNaN(t.columns[2].recovery.mean)).toBe(true);
    const md = renderTable(t, "tiny");
    expect(md.split("\n")[0]).toBe("| model | eps=0 | eps=4 | eps=inf | eps=inf (DP settings) |");
    expect(md).toMatch(/\| recovery of the non-private gain \(%\) \| 0 \| 60\.00 \+- 24\.84 \| 200\.00 \+- 0\.00 \| 100 \(reference\) \|/);
    expect(md).toMatch(/eps=inf \(DP settings\): non-private, with the DP columns' data/);
    // without the like-for-like column the plain inf column is the reference
    const plain = buildTable(lf.filter((c) => !c.dpSettings));
    expect(plain.columns[0].recovery.mean).toBeCloseTo(0.3); // 0.25, 0.3, 0.35
    expect(renderTable(plain, "tiny")).toMatch(/\| 100 \(reference\) \|/);
  });
  it("the sweep runs eps = inf twice: the nonPrivate recipe and the DP settings", () => {
    const cfg = parseConfig({ sweep: { epsilons: ["inf", 4], seeds: [0] }, nonPrivate: { ppo: { lr: 0.0014, whitenAdvantages: "batch" } } });
    expect(sweepColumns(cfg)).toEqual([{ eps: Infinity, dpSettings: false }, { eps: Infinity, dpSettings: true }, { eps: 4, dpSettings: false }]);
    const own = effectiveStages(sweepRunConfig(cfg, Infinity, 0, false)).ppo;
    const matched = effectiveStages(sweepRunConfig(cfg, Infinity, 0, true)).ppo;
    expect(own.lr).toBe(0.0014);
    expect(matched.lr).toBe(cfg.ppo.lr);
    expect(matched.whitenAdvantages).toBe(cfg.ppo.whitenAdvantages);
    expect(sweepRunDir("/r", Infinity, 2, true)).toBe("/r/epsinf-dpsettings-seed2");
    // like for like: the DP runs' per-stage data (D1 / D3 disjoint) and number of steps
    const plan = (eps: number, dpSettings: boolean) => planRun(sweepRunConfig(cfg, eps, 0, dpSettings), accountantCalibrator, IMDB_SIZES);
    expect(disjointStages(sweepRunConfig(cfg, Infinity, 0, true))).toBe(true);
    expect(disjointStages(sweepRunConfig(cfg, Infinity, 0, false))).toBe(false);
    const [matchedPlan, dpPlan, ownPlan] = [plan(Infinity, true), plan(4, false), plan(Infinity, false)];
    expect(matchedPlan.sizes).toEqual(dpPlan.sizes);
    // the same steps up to rounding (DP: epochs / q sampled batches; non-private: epochs x ceil(N / batch))
    for (const st of ["sft", "ppo"] as const) expect(Math.abs(matchedPlan[st]!.sampledBatches / dpPlan[st]!.sampledBatches - 1)).toBeLessThan(0.01);
    expect(ownPlan.sizes.d3).toBeGreaterThan(dpPlan.sizes.d3);
    expect(sweepColumns(parseConfig({ sweep: { epsilons: ["inf"], infWithDpSettings: false } }))).toHaveLength(1);
    expect(sweepColumns(parseConfig({ sweep: { epsilons: ["inf", 4], nonPrivateRecipe: false } }))).toEqual([{ eps: Infinity, dpSettings: true }, { eps: 4, dpSettings: false }]);
  });
  it("meanCi handles tiny samples", () => {
    expect(meanCi([]).mean).toBeNaN();
    expect(meanCi([2]).ci95).toBeNaN();
    expect(meanCi([1, 3]).mean).toBe(2);
  });
});
