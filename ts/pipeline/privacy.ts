/**
 * The pipeline's one door to the privacy accountants (ts/privacy): epsilon of a planned
 * sampled-Gaussian stage, and sigma calibrated for a target by bisection on it.
 */
import { computeRdp, DEFAULT_RDP_ORDERS, rdpToEpsilon } from "../privacy/analysis/rdp.js";
import { numericalEpsilon } from "../privacy/analysis/numerical.js";
import type { Calibrator } from "./plan.js";

function stageEpsilon(o: { q: number; steps: number; sigma: number; delta: number; accountant: "prv" | "rdp" }): number {
  if (o.steps === 0 || o.q === 0) return 0;
  if (o.accountant === "rdp") return rdpToEpsilon(DEFAULT_RDP_ORDERS, computeRdp(o.q, o.sigma, o.steps, DEFAULT_RDP_ORDERS), o.delta).epsilon;
  return numericalEpsilon([{ q: o.q, sigma: o.sigma, steps: o.steps }], o.delta).epsilon;
}

function calibrate(o: { q: number; steps: number; epsilon: number; delta: number; accountant: "prv" | "rdp" }): number {
  const eps = (sigma: number) => stageEpsilon({ ...o, sigma });
  let lo = 0.05;
  let hi = 1;
  while (eps(hi) > o.epsilon) {
    lo = hi;
    hi *= 2;
    if (hi > 1e4) throw new RangeError(`no sigma below 1e4 reaches epsilon ${o.epsilon}`);
  }
  // Bisection to a relative precision of 1e-3; the upper end always satisfies the target.
  while (hi - lo > 1e-3 * hi) {
    const mid = (lo + hi) / 2;
    if (eps(mid) > o.epsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}

export const accountantCalibrator: Calibrator = { calibrateSigma: calibrate, epsilon: stageEpsilon };
