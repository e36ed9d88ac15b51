/**
 * Special functions in double precision, written for the accountants: erfc and its logarithm
 * (accurate deep into the tails), the Gaussian tail, and log-space addition/subtraction.
 * No dependency beyond Math.
 */

const SQRT_PI = Math.sqrt(Math.PI);
const LOG_SQRT_PI = 0.5 * Math.log(Math.PI);
const SQRT1_2 = Math.SQRT1_2;

/** erf(x) for |x| <= 3 by the all-positive series erf(x) = 2/sqrt(pi) e^{-x^2} sum 2^n x^{2n+1}/(2n+1)!!. */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return (2 / SQRT_PI) * Math.exp(-x2) * sum;
}

/** The continued fraction sqrt(pi) e^{x^2} erfc(x) = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), x >= 2.5. */
function erfcxFraction(x: number): number {
  // Backward evaluation with a fixed depth that suffices for 1e-16 relative accuracy at x >= 2.5.
  const depth = x >= 8 ? 12 : x >= 5 ? 28 : x >= 3.5 ? 55 : 80;
  let f = x;
  for (let k = depth; k >= 1; k--) f = x + k / 2 / f;
  return 1 / f;
}

/** Complementary error function erfc(x), relative accuracy ~1e-15 over the whole line (0 past x ~ 27). */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  if (x < 2.5) return 1 - erfSeries(x);
  return (Math.exp(-x * x) / SQRT_PI) * erfcxFraction(x);
}

/** log(erfc(x)), finite for every finite x (uses the asymptotic fraction for large x). */
export function logErfc(x: number): number {
  if (x < 2.5) return Math.log(erfc(x));
  return -x * x - LOG_SQRT_PI + Math.log(erfcxFraction(x));
}

/** Upper tail of the standard normal, P(Z > z). */
export function normSf(z: number): number {
  return 0.5 * erfc(z * SQRT1_2);
}

/** Standard normal CDF, P(Z <= z). */
export function normCdf(z: number): number {
  return 0.5 * erfc(-z * SQRT1_2);
}

/** log P(Z <= z) for the standard normal, accurate in the lower tail (scipy's log_ndtr). */
export function logNormCdf(z: number): number {
  return Math.log(0.5) + logErfc(-z * SQRT1_2);
}

/** log(e^a + e^b) without overflow. */
export function logAdd(a: number, b: number): number {
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  if (lo === -Infinity) return hi;
  return Math.log1p(Math.exp(lo - hi)) + hi;
}

/** log(e^a - e^b) for a >= b. */
export function logSub(a: number, b: number): number {
  if (a < b) throw new RangeError(`logSub: the result is negative (a=${a} < b=${b})`);
  if (b === -Infinity) return a;
  if (a === b) return -Infinity;
  const d = Math.expm1(a - b);
  return Number.isFinite(d) ? Math.log(d) + b : a;
}

/** log(sum_i e^{v_i}) over an array. */
export function logSumExp(values: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i] > m) m = values[i];
  if (m === -Infinity || !Number.isFinite(m)) return m;
  let s = 0;
  for (let i = 0; i < values.length; i++) s += Math.exp(values[i] - m);
  return m + Math.log(s);
}
