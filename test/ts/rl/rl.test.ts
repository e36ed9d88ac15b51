import { describe, expect, it } from "vitest";
import { klShapedRewards } from "../../../ts/rl/rewards.js";
import { gae, discountedReturns } from "../../../ts/rl/gae.js";
import { whiten, normalizeScores } from "../../../ts/rl/normalize.js";
import { createKlController, AdaptiveKlController } from "../../../ts/rl/kl-control.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";

describe("klShapedRewards (Eq. 2)", () => {
  it("computes per-token rewards", () => {
    const { rewards, kl } = klShapedRewards([2, -1], [[-1, -2, -3], [-0.5]], [[-1.5, -2, -2], [-0.5]], 0.1);
    expect(rewards[0][0]).toBeCloseTo(-0.05);
    expect(rewards[0][1]).toBeCloseTo(0);
    expect(rewards[0][2]).toBeCloseTo(0.1 + 2);
    expect(rewards[1]).toEqual([-1]);
    expect(kl[0]).toBeCloseTo(0.5 - 1);
  });
  it("handles empty responses and rejects ragged mismatches", () => {
    expect(klShapedRewards([1], [[]], [[]], 0.2).rewards).toEqual([[]]);
    expect(() => klShapedRewards([1], [[1, 2]], [[1]], 0.1)).toThrow(InvalidArgumentError);
    expect(() => klShapedRewards([1, 2], [[1]], [[1]], 0.1)).toThrow(/one row per example/);
  });
});

describe("gae", () => {
  it("equals discounted returns minus values when lam = 1", () => {
    const r = [[1, 0, 2], [0.5]];
    const v = [[0.2, 0.1, -0.3], [1]];
    const { advantages, returns } = gae(r, v, 0.9, 1);
    const g = discountedReturns(r, 0.9);
    advantages.forEach((row, i) => row.forEach((a, t) => expect(a).toBeCloseTo(g[i][t] - v[i][t])));
    returns.forEach((row, i) => row.forEach((x, t) => expect(x).toBeCloseTo(g[i][t])));
  });
  it("is the one-step TD error when lam = 0", () => {
    const { advantages } = gae([[1, 2]], [[0.5, 0.25]], 1, 0);
    expect(advantages[0][0]).toBeCloseTo(1 + 0.25 - 0.5);
    expect(advantages[0][1]).toBeCloseTo(2 - 0.25);
  });
  it("rows are independent of each other", () => {
    const a = gae([[1, 2, 3]], [[0, 0, 0]], 0.99, 0.95).advantages[0];
    const b = gae([[1, 2, 3], [100, -100]], [[0, 0, 0], [5, 5]], 0.99, 0.95).advantages[0];
    expect(b).toEqual(a);
  });
  it("rejects bad parameters", () => {
    expect(() => gae([[1]], [[1]], 1.5, 0.9)).toThrow(/gamma/);
    expect(() => gae([[1]], [], 1, 0.9)).toThrow(InvalidArgumentError);
  });
});

describe("DP-mode guards", () => {
  const adv = [[1, 2, 3], [4, 5]];
  it("refuses batch whitening in DP mode and allows it otherwise", () => {
    expect(() => whiten(adv, "batch", { dp: true })).toThrow(/refused in DP mode/);
    const w = whiten(adv, "batch", { dp: false }).flat();
    expect(w.reduce((a, b) => a + b, 0)).toBeCloseTo(0);
  });
  it("per-example whitening depends only on the example's own tokens", () => {
    const w1 = whiten([[1, 2, 3]], "per_example", { dp: true });
    const w2 = whiten([[1, 2, 3], [100, 200]], "per_example", { dp: true });
    expect(w2[0]).toEqual(w1[0]);
    expect(whiten([[7]], "per_example", { dp: true })).toEqual([[0]]);
  });
  it("refuses batch reward normalisation in DP mode; fixed statistics are allowed", () => {
    expect(() => normalizeScores([1, 2], "batch", { dp: true })).toThrow(InvalidArgumentError);
    expect(normalizeScores([1, 3], "fixed", { dp: true }, { mean: 1, std: 2 })).toEqual([0, 1]);
    expect(normalizeScores([1, 3], "none", { dp: true })).toEqual([1, 3]);
  });
  it("refuses the adaptive KL controller in DP mode", () => {
    expect(() => createKlController({ klControl: "adaptive", klCoef: 0.1 }, { dp: true })).toThrow(/refused in DP mode/);
    const fixed = createKlController({ klControl: "fixed", klCoef: 0.1 }, { dp: true });
    fixed.update(100, 256);
    expect(fixed.value()).toBe(0.1);
  });
  it("adaptive controller moves beta toward the target outside DP mode", () => {
    const c = createKlController({ klControl: "adaptive", klCoef: 0.2, klTarget: 6, klHorizon: 10000 }, { dp: false });
    expect(c).toBeInstanceOf(AdaptiveKlController);
    c.update(12, 256);
    expect(c.value()).toBeCloseTo(0.2 * (1 + 0.2 * 256 / 10000));
    c.update(0, 256);
    expect(c.value()).toBeLessThan(0.2 * (1 + 0.2 * 256 / 10000));
  });
});
