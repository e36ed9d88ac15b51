/**
 * Renyi differential privacy of the Poisson-subsampled Gaussian mechanism (add/remove adjacency),
 * after Mironov, Talwar and Zhang (2019), "Renyi Differential Privacy of the Sampled Gaussian
 * Mechanism", and the RDP -> (eps, delta) conversion of Balle et al. (2020), Theorem 21.
 * Stateless; the same algorithm as Opacus's `accountants/analysis/rdp.py`, so figures agree.
 */
import { logAdd, logErfc, logSub } from "./special.js";

/** Opacus's default RDP orders: 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63. */
export const DEFAULT_RDP_ORDERS: readonly number[] = Object.freeze([
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 52 }, (_, i) => 12 + i),
]);

/** log of the binomial coefficient C(n, k) for integers 0 <= k <= n. */
function logBinomInt(n: number, k: number): number {
  let s = 0;
  const m = Math.min(k, n - k);
  for (let i = 1; i <= m; i++) s += Math.log(n - m + i) - Math.log(i);
  return s;
}

/** log A_alpha for integer alpha: a finite binomial sum (Mironov et al. 2019, Section 3.3). */
function logAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  for (let i = 0; i <= alpha; i++) {
    const logCoef = logBinomInt(alpha, i) + i * lq + (alpha - i) * l1q;
    logA = logAdd(logA, logCoef + (i * i - i) / (2 * sigma * sigma));
  }
  return logA;
}

/** log A_alpha for fractional alpha: two alternating series cut off below e^-30 (Section 3.3). */
function logAFrac(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  const s2 = Math.SQRT2 * sigma;
  let coef = 1; // C(alpha, i) by the recurrence C(a, i+1) = C(a, i) (a - i) / (i + 1)
  for (let i = 0; ; i++) {
    if (i > 0) coef *= (alpha - (i - 1)) / i;
    const logCoef = Math.log(Math.abs(coef));
    const j = alpha - i;
    const logT0 = logCoef + i * lq + j * l1q;
    const logT1 = logCoef + j * lq + i * l1q;
    const logE0 = Math.log(0.5) + logErfc((i - z0) / s2);
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / s2);
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    if (coef > 0) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30 || i > 100_000) break;
  }
  return logAdd(logA0, logA1);
}

/** RDP of one step of the sampled Gaussian mechanism at one order alpha > 1. */
export function rdpSampledGaussianStep(q: number, sigma: number, alpha: number): number {
  if (q === 0) return 0;
  if (sigma === 0) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  if (!Number.isFinite(alpha)) return Infinity;
  const logA = Number.isInteger(alpha) ? logAInt(q, sigma, alpha) : logAFrac(q, sigma, alpha);
  return logA / (alpha - 1);
}

/** RDP of `steps` compositions of the sampled Gaussian at each order (Opacus `compute_rdp`). */
export function computeRdp(q: number, sigma: number, steps: number, orders: readonly number[]): number[] {
  return orders.map((a) => rdpSampledGaussianStep(q, sigma, a) * steps);
}

/** The (epsilon, best order) from RDP values at the given orders, by Balle et al. 2020, Thm 21. */
export function rdpToEpsilon(
  orders: readonly number[],
  rdp: readonly number[],
  delta: number,
): { epsilon: number; bestOrder: number } {
  if (orders.length !== rdp.length) throw new RangeError("orders and rdp differ in length");
  let best = Infinity;
  let bestOrder = NaN;
  const logDelta = Math.log(delta);
  for (let i = 0; i < orders.length; i++) {
    const a = orders[i];
    if (!(a > 1)) throw new RangeError(`RDP orders must exceed 1, got ${a}`);
    if (rdp[i] < 0) throw new RangeError(`RDP values must be non-negative, got ${rdp[i]}`);
    const eps = rdp[i] - (logDelta + Math.log(a)) / (a - 1) + Math.log((a - 1) / a);
    if (eps < best) {
      best = eps;
      bestOrder = a;
    }
  }
  return { epsilon: Math.max(0, best), bestOrder };
}
