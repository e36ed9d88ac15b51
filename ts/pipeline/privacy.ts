/**
 * The pipeline's one door to the privacy accountants (ts/privacy): epsilon of a planned
 * sampled-Gaussian stage and sigma calibrated for a target, through the package's public API.
 */
import { calibrateSigma, composeSequential, epsilon, splitBudget } from "../privacy/index.js";
import type { Calibrator } from "./plan.js";

export const accountantCalibrator: Calibrator = {
  calibrateSigma: (o) => calibrateSigma({ q: o.q, steps: o.steps, targetEpsilon: o.epsilon, delta: o.delta, accountant: o.accountant }).sigma,
  epsilon: (o) => (o.steps === 0 || o.q === 0 ? 0 : epsilon({ mechanisms: [{ q: o.q, sigma: o.sigma, steps: o.steps }], delta: o.delta, accountant: o.accountant }).epsilon),
  splitSequential: (o) =>
    splitBudget({
      targetEpsilon: o.epsilon, delta: o.delta, composition: "sequential", accountant: o.accountant,
      stages: o.stages.map((s, i) => ({ stage: `stage${i}`, q: s.q, steps: s.steps })),
    }).stages.map((s) => s.sigma ?? NaN),
  composeSequential: (o) => {
    const run = o.stages.filter((s) => s.steps > 0 && s.q > 0);
    if (run.length === 0) return 0;
    return composeSequential(run.map((s, i) => ({ stage: `stage${i}`, mechanisms: [{ q: s.q, sigma: s.sigma, steps: s.steps }] })), o.delta, o.accountant).epsilon;
  },
};
