/**
 * The one-run audit's bound (ts/audit/analysis.ts) against hand-computable cases and against an
 * independent implementation of the paper's formula (Python, math.lgamma, the paper's bisection).
 */
import { describe, expect, it } from "vitest";
import {
  auditScores,
  binomialPmfs,
  correctGuesses,
  defaultKs,
  epsilonLowerBound,
  pValue,
} from "../../../ts/audit/analysis.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";

const logit = (q: number) => Math.log(q / (1 - q));

/** P[Binomial(r, q) >= v] by the pmf recurrence p(j+1) = p(j) (r-j)/(j+1) q/(1-q): another route than log-factorials. */
function binomialTail(r: number, q: number, v: number): number {
  let p = (1 - q) ** r;
  let tail = 0;
  for (let j = 0; j <= r; j++) {
    if (j >= v) tail += p;
    p = (p * (r - j) * q) / ((j + 1) * (1 - q));
  }
  return tail;
}

describe("pValue", () => {
  it("is the binomial tail (the pure-DP bound) when delta = 0", () => {
    for (const [r, v, eps] of [[20, 15, 1], [100, 70, 0.5], [60, 60, 3], [50, 10, 2]] as const) {
      const q = 1 / (1 + Math.exp(-eps));
      expect(pValue({ m: 1000, r, v, epsilon: eps, delta: 0 })).toBeCloseTo(binomialTail(r, q, v), 12);
    }
  });

  it("adds the delta term: one guess, one correct: q + 2m delta (1 - q)", () => {
    const eps = 1.3;
    const q = 1 / (1 + Math.exp(-eps));
    expect(pValue({ m: 1, r: 1, v: 1, epsilon: eps, delta: 0.01 })).toBeCloseTo(q + 0.02 * (1 - q), 14);
    expect(pValue({ m: 5, r: 1, v: 1, epsilon: eps, delta: 0.01 })).toBeCloseTo(q + 0.1 * (1 - q), 14);
  });

  it("matches the paper's formula computed independently", () => {
    // python: beta + alpha * delta * 2m with scipy-free lgamma pmfs
    expect(pValue({ m: 1000, r: 100, v: 90, epsilon: 2, delta: 1e-5 })).toBeCloseTo(0.3449868367937862, 10);
    expect(pValue({ m: 1000, r: 100, v: 90, epsilon: 2, delta: 0 })).toBeCloseTo(0.3425540546249074, 10);
  });

  it("has pmfs that sum to one, also at large epsilon", () => {
    for (const eps of [0, 1, 10, 50]) {
      const p = binomialPmfs(300, eps);
      expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 10);
    }
  });
});

describe("epsilonLowerBound", () => {
  it("all correct, delta = 0: q^r = significance, epsilon = logit(q)", () => {
    for (const [r, s] of [[10, 0.05], [200, 0.01], [1000, 0.05]] as const) {
      const q = s ** (1 / r);
      expect(epsilonLowerBound({ m: 10_000, r, v: r, delta: 0, significance: s })).toBeCloseTo(logit(q), 8);
    }
    // r = 10 at 95%: 0.05^(1/10) = 0.74113, logit 1.05187
    expect(epsilonLowerBound({ m: 10, r: 10, v: 10, delta: 0, significance: 0.05 })).toBeCloseTo(1.05187, 4);
  });

  it("one correct guess with delta: q = (s - 2m delta) / (1 - 2m delta)", () => {
    const q = (0.9 - 0.02) / (1 - 0.02);
    expect(epsilonLowerBound({ m: 1, r: 1, v: 1, delta: 0.01, significance: 0.9 })).toBeCloseTo(logit(q), 9);
  });

  it("matches the paper's bisection computed independently", () => {
    const cases: [number, number, number, number, number, number][] = [
      [1000, 100, 90, 0.05, 1e-5, 1.6261434806957331],
      [1000, 100, 90, 0.05, 0, 1.630823192740982],
      [10000, 1000, 1000, 0.05, 1e-5, 5.529349602846465],
      [10000, 1000, 1000, 0.05, 0, 5.809068338546592],
      [2000, 400, 300, 0.01, 1e-5, 0.8237304405974951],
      [100, 100, 60, 0.05, 1e-3, 0.026740188096348056],
    ];
    for (const [m, r, v, s, delta, want] of cases) {
      expect(epsilonLowerBound({ m, r, v, delta, significance: s }), `m ${m} r ${r} v ${v} delta ${delta}`).toBeCloseTo(want, 6);
    }
  });

  it("half correct gives (about) nothing", () => {
    expect(epsilonLowerBound({ m: 2000, r: 1000, v: 500, delta: 1e-5, significance: 0.05 })).toBe(0);
    expect(epsilonLowerBound({ m: 2000, r: 1000, v: 0, delta: 1e-5, significance: 0.05 })).toBe(0);
    // a little above half: within noise of zero
    expect(epsilonLowerBound({ m: 2000, r: 1000, v: 530, delta: 1e-5, significance: 0.05 })).toBeLessThan(0.02);
  });

  it("grows with the number of correct guesses and shrinks with delta", () => {
    let prev = -1;
    for (let v = 500; v <= 1000; v += 25) {
      const eps = epsilonLowerBound({ m: 5000, r: 1000, v, delta: 1e-5, significance: 0.05 });
      expect(eps).toBeGreaterThanOrEqual(prev);
      prev = eps;
    }
    expect(prev).toBeGreaterThan(5);
    for (const v of [700, 900, 1000]) {
      const pure = epsilonLowerBound({ m: 5000, r: 1000, v, delta: 0, significance: 0.05 });
      const approx = epsilonLowerBound({ m: 5000, r: 1000, v, delta: 1e-5, significance: 0.05 });
      expect(approx).toBeLessThanOrEqual(pure);
    }
  });

  it("refuses counts that cannot be", () => {
    expect(() => epsilonLowerBound({ m: 10, r: 20, v: 5, delta: 0, significance: 0.05 })).toThrow(InvalidArgumentError);
    expect(() => epsilonLowerBound({ m: 10, r: 5, v: 6, delta: 0, significance: 0.05 })).toThrow(InvalidArgumentError);
    expect(() => epsilonLowerBound({ m: 10, r: 5, v: 4, delta: 0, significance: 1 })).toThrow(InvalidArgumentError);
    expect(() => pValue({ m: 10, r: 5, v: 4, epsilon: 1, delta: 2 })).toThrow(InvalidArgumentError);
  });
});

describe("guesses and the k sweep", () => {
  it("counts top-k 'in' and bottom-k 'out' guesses", () => {
    const scores = [5, 4, 3, 2, 1, 0];
    const included = [true, false, true, false, true, false];
    expect(correctGuesses(scores, included, 1)).toBe(2); // 5 in (right), 0 out (right)
    expect(correctGuesses(scores, included, 2)).toBe(2); // + 4 in (wrong), 1 out (wrong)
    expect(correctGuesses(scores, included, 3)).toBe(4);
    expect(() => correctGuesses(scores, included, 4)).toThrow(InvalidArgumentError);
  });

  it("applies a Bonferroni correction over the k values tried", () => {
    const m = 2000;
    const included = Array.from({ length: m }, (_, i) => i % 2 === 0);
    const scores = included.map((b, i) => (b ? 10 : 0) + (i % 7) / 7); // perfectly separated
    const a = auditScores(scores, included, { delta: 1e-5 });
    expect(a.perK.map((x) => x.k)).toEqual(defaultKs(m));
    expect(a.significance).toBeCloseTo(0.05 / defaultKs(m).length, 15);
    for (const x of a.perK) expect(x.v).toBe(x.r);
    expect(a.best.k).toBe(900);
    expect(a.best.epsilon).toBeCloseTo(epsilonLowerBound({ m, r: 1800, v: 1800, delta: 1e-5, significance: a.significance }), 12);
    expect(a.ceiling).toBe(a.best.epsilon);
    // one k fixed in advance: no correction, a larger bound
    const fixed = auditScores(scores, included, { delta: 1e-5, ks: [900] });
    expect(fixed.significance).toBeCloseTo(0.05, 15);
    expect(fixed.best.epsilon).toBeGreaterThan(a.best.epsilon);
  });

  it("finds nothing in scores unrelated to membership", () => {
    const m = 2000;
    const included = Array.from({ length: m }, (_, i) => (i * 7919) % 13 < 6);
    const scores = included.map((_, i) => Math.sin(i * 12.9898) * 43758.5453 % 1);
    expect(auditScores(scores, included, { delta: 1e-5 }).best.epsilon).toBeLessThan(0.5);
  });
});
