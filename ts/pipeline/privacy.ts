/**
 * The pipeline's one door to the privacy accountants (ts/privacy): epsilon of a planned
 * sampled-Gaussian stage and sigma calibrated for a target, through the package's public API.
 */
import { calibrateSigma, epsilon } from "../privacy/index.js";
import type { Calibrator } from "./plan.js";

export const accountantCalibrator: Calibrator = {
  calibrateSigma: (o) => calibrateSigma({ q: o.q, steps: o.steps, targetEpsilon: o.epsilon, delta: o.delta, accountant: o.accountant }).sigma,
  epsilon: (o) => (o.steps === 0 || o.q === 0 ? 0 : epsilon({ mechanisms: [{ q: o.q, sigma: o.sigma, steps: o.steps }], delta: o.delta, accountant: o.accountant }).epsilon),
};
