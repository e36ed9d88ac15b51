// First-principles properties of the accountants and the math under them.
import { describe, expect, it } from "vitest";
import { hockeyStick } from "../../../ts/privacy/analysis/gaussian.js";
import { discretiseSampledGaussian, epsilonForDelta } from "../../../ts/privacy/analysis/pld.js";
import { erfc, logErfc } from "../../../ts/privacy/analysis/special.js";
import { analyticGaussianDelta, analyticGaussianEpsilon, createAccountant, epsilon, reuseMechanism } from "../../../ts/privacy/index.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";

const eps = (q: number, sigma: number, steps: number, accountant = "prv", delta = 1e-5): number =>
  epsilon({ mechanisms: [{ q, sigma, steps }], delta, accountant }).epsilon;

describe("special functions", () => {
  it("erfc and log erfc match scipy in the body and the far tail", () => {
    const ref: [number, number, number][] = [
      [0.1, 0.8875370839817152, -0.11930497373739557],
      [1, 0.15729920705028516, -1.849605509933249],
      [3, 2.2090496998585445e-5, -10.720363041981116],
      [5, 1.5374597944280347e-12, -27.200889545537446],
      [12, 1.3562611692059047e-64, -147.06071417798705],
      [30, 0, -903.9741171106442],
    ];
    for (const [x, e, l] of ref) {
      if (e > 0) expect(Math.abs(erfc(x) - e) / e).toBeLessThan(1e-13);
      expect(Math.abs(logErfc(x) - l) / Math.abs(l)).toBeLessThan(1e-13);
    }
    expect(erfc(-1)).toBeCloseTo(2 - 0.15729920705028516, 15);
  });
});

describe("monotonicity", () => {
  for (const accountant of ["rdp", "prv"]) {
    it(`${accountant}: epsilon decreases in sigma and increases in q and T`, () => {
      const sigmas = [0.7, 1, 1.5, 3];
      const bySigma = sigmas.map((s) => eps(0.01, s, 1000, accountant));
      for (let i = 1; i < bySigma.length; i++) expect(bySigma[i]).toBeLessThan(bySigma[i - 1]);
      const byQ = [0.001, 0.01, 0.05, 0.2].map((q) => eps(q, 1, 500, accountant));
      for (let i = 1; i < byQ.length; i++) expect(byQ[i]).toBeGreaterThan(byQ[i - 1]);
      const byT = [1, 10, 100, 1000].map((t) => eps(0.02, 1, t, accountant));
      for (let i = 1; i < byT.length; i++) expect(byT[i]).toBeGreaterThan(byT[i - 1]);
    });
  }

  it("the tight accountant is below RDP", () => {
    expect(eps(0.01, 1, 1000)).toBeLessThan(eps(0.01, 1, 1000, "rdp"));
  });
});

describe("q = 1: the analytic Gaussian mechanism (Balle and Wang 2018)", () => {
  it("one step equals the analytic Gaussian epsilon", () => {
    for (const sigma of [0.6, 1, 2, 5]) {
      for (const delta of [1e-5, 1e-8]) {
        expect(Math.abs(eps(1, sigma, 1, "prv", delta) - analyticGaussianEpsilon(sigma, delta))).toBeLessThan(1e-9);
      }
    }
  });

  it("T steps equal one Gaussian with sigma / sqrt(T) (via FFT composition)", () => {
    for (const [sigma, t] of [
      [2, 16],
      [5, 100],
    ]) {
      const composed = eps(1, sigma, t);
      const exact = analyticGaussianEpsilon(sigma / Math.sqrt(t), 1e-5);
      expect(composed).toBeGreaterThanOrEqual(exact - 1e-9); // an upper bound...
      expect(composed - exact).toBeLessThan(1e-3 * exact); // ...and a tight one
    }
  });

  it("analytic delta(eps) is consistent with its inverse", () => {
    const e = analyticGaussianEpsilon(1.3, 1e-6);
    expect(analyticGaussianDelta(1.3, e)).toBeLessThanOrEqual(1e-6 * (1 + 1e-9));
  });
});

describe("reuse of a sub-sample in K noisy steps", () => {
  it("equals one sampled Gaussian with sigma / sqrt(K)", () => {
    expect(reuseMechanism(2, 4)).toBe(1);
    expect(reuseMechanism(3, 1)).toBe(3);
    // K Gaussian mechanisms on the same sample: with q = 1 the composition is exactly sigma/sqrt(K).
    const k = 4;
    const sigma = 2;
    const reused = eps(1, reuseMechanism(sigma, k), 1);
    const kSteps = analyticGaussianEpsilon(sigma / Math.sqrt(k), 1e-5);
    expect(Math.abs(reused - kSteps)).toBeLessThan(1e-9);
    // and it costs more privacy than one step of the same noise, less than K Poisson steps' naive sum
    expect(eps(0.01, reuseMechanism(sigma, k), 100)).toBeGreaterThan(eps(0.01, sigma, 100));
    expect(() => reuseMechanism(1, 0)).toThrow(InvalidArgumentError);
    expect(() => reuseMechanism(1, 1.5)).toThrow(InvalidArgumentError);
  });
});

describe("connect-the-dots discretisation", () => {
  it("dominates the exact hockey stick at every epsilon (an upper bound)", () => {
    for (const [q, sigma] of [
      [0.01, 1],
      [0.1, 0.8],
      [1, 2],
    ]) {
      for (const dir of ["remove", "add"] as const) {
        const p = discretiseSampledGaussian(q, sigma, dir, 1e-3);
        for (const e of [-0.05, 0, 0.0137, 0.1, 0.5, 1.234]) {
          let d = p.infMass;
          p.pmf.forEach((m, i) => (d += m * Math.max(0, 1 - Math.exp(e - (p.kLo + i) * p.h))));
          expect(d).toBeGreaterThanOrEqual(hockeyStick(q, sigma, dir, e) - 1e-12);
          expect(d - hockeyStick(q, sigma, dir, e)).toBeLessThan(1e-4);
        }
      }
    }
  });

  it("reads epsilon off a PLD exactly", () => {
    // A PLD with mass 0.5 at loss 1 and 0.5 at loss 0: delta(eps) = 0.5 (1 - e^(eps-1)) on [0, 1].
    const p = { h: 1, kLo: 0, pmf: new Float64Array([0.5, 0.5]), infMass: 0 };
    const e = epsilonForDelta(p, 0.1);
    expect(e).toBeCloseTo(1 + Math.log(0.8), 12);
    expect(epsilonForDelta({ ...p, infMass: 0.2 }, 0.1)).toBe(Infinity);
  });
});

describe("accountant interface and arguments", () => {
  it("keeps a history, composes it, and saves/loads its state", () => {
    const acc = createAccountant("prv");
    acc.step({ q: 0.01, sigma: 1, steps: 500 });
    acc.step({ q: 0.01, sigma: 1, steps: 500 });
    expect(acc.history).toEqual([{ q: 0.01, sigma: 1, steps: 1000 }]);
    const e = acc.getEpsilon(1e-5).epsilon;
    expect(Math.abs(e - eps(0.01, 1, 1000))).toBeLessThan(1e-9);
    const other = createAccountant("rdp", { orders: [2, 4, 8, 16, 32] });
    other.loadStateDict(acc.stateDict());
    expect(other.getEpsilon(1e-5).bestOrder).toBeDefined();
    expect(other.getEpsilon(1e-5).epsilon).toBeGreaterThan(e);
  });

  it("rejects bad arguments with clear errors", () => {
    const bad: [number, number, number, number][] = [
      [0, 1, 10, 1e-5],
      [1.5, 1, 10, 1e-5],
      [0.1, 0, 10, 1e-5],
      [0.1, -1, 10, 1e-5],
      [0.1, 1, 2.5, 1e-5],
      [0.1, 1, -1, 1e-5],
      [0.1, 1, 10, 0],
      [0.1, 1, 10, 1],
    ];
    for (const [q, sigma, steps, delta] of bad) {
      for (const accountant of ["rdp", "prv"]) {
        expect(() => epsilon({ mechanisms: [{ q, sigma, steps }], delta, accountant })).toThrow(InvalidArgumentError);
      }
    }
    expect(() => createAccountant("moments")).toThrow(/supported: rdp, pld, prv/);
  });
});
