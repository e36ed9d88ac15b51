import { describe, expect, it } from "vitest";
import { buildTable, renderTable } from "../../../ts/pipeline/table.js";
import { meanCi, tQuantile975 } from "../../../ts/pipeline/stages/evaluate.js";

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
  it("meanCi handles tiny samples", () => {
    expect(meanCi([]).mean).toBeNaN();
    expect(meanCi([2]).ci95).toBeNaN();
    expect(meanCi([1, 3]).mean).toBe(2);
  });
});
