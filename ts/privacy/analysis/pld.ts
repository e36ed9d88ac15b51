/**
 * Privacy loss distributions (PLD; the privacy random variable of Gopi et al. 2021) on a uniform
 * grid, composed by FFT. Discretisation is pessimistic "connect the dots" (Doroshenko et al.
 * 2022, as in Google's dp_accounting): the discrete PLD's hockey-stick curve interpolates the
 * exact one at the grid points in e^eps, where the exact curve is convex, so it dominates the
 * mechanism and every epsilon computed from it is an upper bound.
 *
 * Composition: every mechanism's PLD is transformed once; T-fold self-composition is the T-th
 * pointwise power of its spectrum; heterogeneous mechanisms multiply. The circular window is
 * chosen by a Chernoff bound computed from the discrete PLDs themselves; the mass that could wrap
 * around from above is added to delta, so the result stays an upper bound.
 */
import FFT from "fft.js";
import { type Direction, hockeyStick, privacyLoss } from "./gaussian.js";
import { normSf } from "./special.js";
import type { Window } from "./window.js";

/** A discrete PLD: mass pmf[i] at loss (kLo + i) * h, plus mass at +infinity. */
export interface DiscretePld {
  readonly h: number;
  readonly kLo: number;
  readonly pmf: Float64Array;
  readonly infMass: number;
}

/** z with P(Z > z) = p for the standard normal (bisection; p in (0, 0.5]). */
export function normalTailQuantile(p: number): number {
  let lo = 0;
  let hi = 40;
  for (let i = 0; i < 60; i++) {
    const mid = 0.5 * (lo + hi);
    if (normSf(mid) > p) lo = mid;
    else hi = mid;
  }
  return hi;
}

/**
 * Pessimistic connect-the-dots PLD of one step of the subsampled Gaussian on the grid k*h. The
 * grid covers the losses of outputs within `tailZ` noise deviations; the P-mass beyond is at most
 * P(Z > tailZ) on each side: above it goes to +infinity, below it is rounded up (pessimistic).
 */
export function discretiseSampledGaussian(q: number, sigma: number, dir: Direction, h: number, tailZ = 8.3): DiscretePld {
  const xLo = -tailZ * sigma;
  const xHi = 1 + tailZ * sigma;
  const a = privacyLoss(q, sigma, dir, xLo);
  const b = privacyLoss(q, sigma, dir, xHi);
  const epsLo = Math.min(a, b);
  const epsHi = Math.max(a, b);
  const kLo = Math.floor(epsLo / h);
  const kHi = Math.max(kLo + 1, Math.ceil(epsHi / h));
  const n = kHi - kLo + 1;
  const delta = new Float64Array(n);
  for (let i = 0; i < n; i++) delta[i] = hockeyStick(q, sigma, dir, (kLo + i) * h);
  const em1 = Math.expm1(h);
  const pmf = new Float64Array(n);
  // slope of the interpolant on the segment left of grid point i (in x = e^eps)
  let sPrev = (delta[0] - 1) / Math.exp(kLo * h);
  for (let i = 0; i < n; i++) {
    const sNext = i + 1 < n ? (delta[i + 1] - delta[i]) / (Math.exp((kLo + i) * h) * em1) : 0;
    const p = (sNext - sPrev) * Math.exp((kLo + i) * h);
    pmf[i] = p > 0 ? p : 0;
    sPrev = sNext;
  }
  return { h, kLo, pmf, infMass: delta[n - 1] };
}

/** One PLD composed `count` times. */
export interface PldPart {
  readonly pld: DiscretePld;
  readonly count: number;
}

/** A composed PLD on a window of N grid points starting at loss kLo * h. */
export interface ComposedPld extends DiscretePld {
  /** Upper bound on composed mass that may have wrapped from above the window (already in infMass). */
  readonly aliasMass: number;
}

const fftCache = new Map<number, FFT>();
function fftOf(n: number): FFT {
  let f = fftCache.get(n);
  if (!f) {
    f = new FFT(n);
    fftCache.set(n, f);
  }
  return f;
}

/** z^c for complex z = (re, im) into out[o], out[o+1]; underflow to 0 skips the trigonometry. */
function cpow(re: number, im: number, c: number, out: Float64Array, o: number): void {
  if (c === 1) {
    out[o] = re;
    out[o + 1] = im;
    return;
  }
  const logMag = 0.5 * c * Math.log(re * re + im * im);
  if (logMag < -745) {
    out[o] = 0;
    out[o + 1] = 0;
    return;
  }
  const mag = Math.exp(logMag);
  const th = c * Math.atan2(im, re);
  out[o] = mag * Math.cos(th);
  out[o + 1] = mag * Math.sin(th);
}

/**
 * Composes two independent families of parts of equal length (typically the "remove" and "add"
 * PLDs of the same mechanisms), packed as real and imaginary parts of one complex transform.
 */
export function composePair(
  a: readonly PldPart[],
  b: readonly PldPart[],
  n: number,
  windows: readonly [Window, Window],
): [ComposedPld, ComposedPld] {
  const fft = fftOf(n);
  const h = a[0].pld.h;
  const half = n / 2 + 1; // outputs are real, so frequencies above N/2 follow by symmetry
  const accA = new Float64Array(2 * half);
  const accB = new Float64Array(2 * half);
  for (let k = 0; k < half; k++) {
    accA[2 * k] = 1;
    accB[2 * k] = 1;
  }
  const input = new Float64Array(2 * n);
  const spec = new Float64Array(2 * n);
  const tmp = new Float64Array(2);
  const place = (p: DiscretePld, imag: number): void => {
    let pos = ((p.kLo % n) + n) % n;
    for (let i = 0; i < p.pmf.length; i++) {
      input[2 * pos + imag] += p.pmf[i];
      if (++pos === n) pos = 0;
    }
  };
  const mulPow = (acc: Float64Array, k: number, re: number, im: number, c: number): void => {
    const ar = acc[2 * k];
    const ai = acc[2 * k + 1];
    if (ar === 0 && ai === 0) return;
    cpow(re, im, c, tmp, 0);
    acc[2 * k] = ar * tmp[0] - ai * tmp[1];
    acc[2 * k + 1] = ar * tmp[1] + ai * tmp[0];
  };
  for (let j = 0; j < a.length; j++) {
    input.fill(0);
    place(a[j].pld, 0);
    place(b[j].pld, 1);
    fft.transform(spec as unknown as number[], input as unknown as number[]);
    for (let k = 0; k < half; k++) {
      const km = k === 0 ? 0 : n - k;
      const zr = spec[2 * k];
      const zi = spec[2 * k + 1];
      const wr = spec[2 * km];
      const wi = -spec[2 * km + 1]; // conj(Z[N-k])
      // A = (Z + conj(Z[N-k]))/2 and B = (Z - conj(Z[N-k]))/(2i) are the spectra of a and b.
      mulPow(accA, k, 0.5 * (zr + wr), 0.5 * (zi + wi), a[j].count);
      mulPow(accB, k, 0.5 * (zi - wi), -0.5 * (zr - wr), b[j].count);
    }
  }
  // W = A + i B; the inverse transform carries a in its real part and b in its imaginary part.
  for (let k = 0; k < half; k++) {
    const ar = accA[2 * k];
    const ai = accA[2 * k + 1];
    const br = accB[2 * k];
    const bi = accB[2 * k + 1];
    input[2 * k] = ar - bi;
    input[2 * k + 1] = ai + br;
    if (k > 0 && k < n - k) {
      // A[N-k] = conj(A[k]), B[N-k] = conj(B[k])
      input[2 * (n - k)] = ar + bi;
      input[2 * (n - k) + 1] = -ai + br;
    }
  }
  fft.inverseTransform(spec as unknown as number[], input as unknown as number[]);
  const out: ComposedPld[] = [];
  for (const [side, parts, win] of [
    [0, a, windows[0]],
    [1, b, windows[1]],
  ] as const) {
    const pmf = new Float64Array(n);
    const lo = win.lo;
    let j = ((lo % n) + n) % n; // array position of grid index lo
    for (let i = 0; i < n; i++) {
      const v = spec[2 * j + side];
      pmf[i] = v > 0 ? v : 0;
      if (++j === n) j = 0;
    }
    let logFinite = 0;
    for (const p of parts) logFinite += p.count * Math.log1p(-Math.min(p.pld.infMass, 1));
    const aliasMass = win.massAbove(lo + n - 1);
    const infMass = Math.min(1, -Math.expm1(logFinite) + aliasMass);
    out.push({ h, kLo: lo, pmf, infMass, aliasMass });
  }
  return [out[0], out[1]];
}

/** The smallest eps >= 0 with delta(eps) <= delta for a discrete PLD (exact for the discrete PLD). */
export function epsilonForDelta(p: DiscretePld, delta: number): number {
  if (p.infMass > delta) return Infinity;
  const { pmf, h, kLo } = p;
  const eh = Math.exp(-h);
  // Scan down: A = mass strictly above the current point (plus infinity), B = sum p_k e^{eps - eps_k}.
  let A = p.infMass;
  let B = 0;
  for (let i = pmf.length - 1; i >= 0; i--) {
    // delta(eps_i) = A_i - B_i with A_i, B_i over atoms above i
    if (A - B > delta) {
      // the root lies in [eps_i, eps_{i+1}]: A - B e^{eps - eps_i} = delta
      const eps = (kLo + i) * h + Math.log((A - delta) / B);
      return Math.max(0, eps);
    }
    A += pmf[i];
    B = (B + pmf[i]) * eh;
  }
  // below every atom: delta(eps) = A - B e^{eps - eps_{-1}}
  if (A - B > delta && B > 0) return Math.max(0, (kLo - 1) * h + Math.log((A - delta) / B));
  return 0;
}
