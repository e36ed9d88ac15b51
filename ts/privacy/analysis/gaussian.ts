/**
 * Closed forms for the (subsampled) Gaussian mechanism with sensitivity 1 and noise std sigma:
 * privacy-loss functions, hockey-stick divergences delta(eps) in both directions of add/remove
 * adjacency, and the analytic Gaussian mechanism of Balle and Wang (2018).
 *
 * "remove": P = (1-q) N(0, s^2) + q N(1, s^2) against Q = N(0, s^2);
 * "add":    P = N(0, s^2) against Q = (1-q) N(0, s^2) + q N(1, s^2).
 */
import { normCdf, normSf } from "./special.js";

/** Which ordered pair of output distributions the privacy loss is taken over. */
export type Direction = "remove" | "add";

/** Privacy loss log(P(x)/Q(x)) at output x. Increasing in x for "remove", decreasing for "add". */
export function privacyLoss(q: number, sigma: number, dir: Direction, x: number): number {
  const z = (2 * x - 1) / (2 * sigma * sigma);
  const l = q === 1 ? z : Math.log1p(q * Math.expm1(z));
  return dir === "remove" ? l : -l;
}

/**
 * Hockey-stick divergence delta(eps) = sup_S P(S) - e^eps Q(S) of one step, exact up to rounding.
 * Defined for every real eps; equals 1 - e^eps below the smallest privacy loss.
 */
export function hockeyStick(q: number, sigma: number, dir: Direction, eps: number): number {
  const e = Math.exp(eps);
  if (dir === "remove") {
    // Loss > eps  <=>  x > x*, with x* = s^2 log((e^eps - 1 + q)/q) + 1/2.
    if (q < 1 && e <= 1 - q) return Math.max(0, 1 - e);
    const xs = q === 1 ? sigma * sigma * eps + 0.5 : sigma * sigma * Math.log((e - 1 + q) / q) + 0.5;
    const d = q * normSf((xs - 1) / sigma) - (e - 1 + q) * normSf(xs / sigma);
    return Math.max(0, d);
  }
  // add: loss > eps  <=>  x < x*, with x* = s^2 log((e^-eps - 1 + q)/q) + 1/2; no such x past -log(1-q).
  const ei = Math.exp(-eps);
  if (q < 1 && ei <= 1 - q) return 0;
  const xs = q === 1 ? -sigma * sigma * eps + 0.5 : sigma * sigma * Math.log((ei - 1 + q) / q) + 0.5;
  const d = (1 - e * (1 - q)) * normCdf(xs / sigma) - e * q * normCdf((xs - 1) / sigma);
  return Math.max(0, d);
}

/** delta(eps) of the (non-subsampled) Gaussian mechanism, Balle and Wang (2018), Theorem 8. */
export function analyticGaussianDelta(sigma: number, eps: number): number {
  const a = 1 / (2 * sigma);
  return Math.max(0, normCdf(a - eps * sigma) - Math.exp(eps) * normCdf(-a - eps * sigma));
}

/** The smallest eps >= 0 with analyticGaussianDelta(sigma, eps) <= delta, by bisection. */
export function analyticGaussianEpsilon(sigma: number, delta: number): number {
  if (analyticGaussianDelta(sigma, 0) <= delta) return 0;
  let lo = 0;
  let hi = 1;
  while (analyticGaussianDelta(sigma, hi) > delta) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
    const mid = 0.5 * (lo + hi);
    if (analyticGaussianDelta(sigma, mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}
