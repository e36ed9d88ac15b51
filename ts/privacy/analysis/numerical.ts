/**
 * The tight numerical accountant's driver: discretise every mechanism in both directions of
 * add/remove adjacency, choose the grid and the FFT window, compose, and read epsilon off the
 * composed PLDs (the larger of the two directions). Stateless.
 */
import { hockeyStick } from "./gaussian.js";
import { compositionWindow, type Window } from "./window.js";
import {
  type ComposedPld,
  composePair,
  type DiscretePld,
  discretiseSampledGaussian,
  epsilonForDelta,
  normalTailQuantile,
  type PldPart,
} from "./pld.js";

/** A Poisson-subsampled Gaussian mechanism run `steps` times (q = 1: the plain Gaussian). */
export interface SampledGaussian {
  readonly q: number;
  readonly sigma: number;
  readonly steps: number;
}

/** Grid and window settings of the numerical accountant. */
export interface NumericalOptions {
  /** Fixed loss grid spacing; by default it is chosen from the composition's spread. */
  readonly h?: number;
  /** Largest FFT length; a wider composition coarsens the grid instead (default 2^20). */
  readonly maxN?: number;
  /** Points the composition window is spread over when the grid is chosen (default 2^17). */
  readonly targetN?: number;
  /** Bounds on the chosen grid spacing (defaults 1e-6 and 1e-2). */
  readonly hMin?: number;
  readonly hMax?: number;
  /** Also compose on the grid 2h to estimate the discretisation error (default true). */
  readonly errorEstimate?: boolean;
  /** Tail mass per side left outside the FFT window, relative to delta (default 1e-3). */
  readonly relTail?: number;
}

/** The two composed PLDs and the grid they live on. */
export interface Composition {
  readonly remove: ComposedPld;
  readonly add: ComposedPld;
  readonly h: number;
  readonly n: number;
  /** The Chernoff exponents of each direction's window, to seed a finer grid's search. */
  readonly hints: readonly [LambdaHint, LambdaHint];
}

type LambdaHint = { upper: number; lower: number };

function nextPow2(x: number): number {
  let n = 64;
  while (n < x) n *= 2;
  return n;
}

/** Same-(q, sigma) mechanisms merged: their steps add. */
export function mergeMechanisms(mechs: readonly SampledGaussian[]): SampledGaussian[] {
  const byKey = new Map<string, SampledGaussian>();
  for (const m of mechs) {
    if (m.steps === 0) continue;
    const key = `${m.q}|${m.sigma}`;
    const prev = byKey.get(key);
    byKey.set(key, prev ? { ...prev, steps: prev.steps + m.steps } : { ...m });
  }
  return [...byKey.values()];
}

const cache = new Map<string, DiscretePld>();
/** Forgets cached discretisations (for benchmarks that time cold computations). */
export function clearNumericalCache(): void {
  cache.clear();
}
function discretised(q: number, sigma: number, dir: "remove" | "add", h: number, tailZ: number): DiscretePld {
  const key = `${q}|${sigma}|${dir}|${h}|${tailZ}`;
  let p = cache.get(key);
  if (!p) {
    p = discretiseSampledGaussian(q, sigma, dir, h, tailZ);
    if (cache.size > 64) cache.clear();
    cache.set(key, p);
  }
  return p;
}

/** Output-space truncation: each step leaves at most tau / (total steps) of P-mass per side. */
function tailZ(merged: readonly SampledGaussian[], tau: number): number {
  const steps = merged.reduce((s, m) => s + m.steps, 0);
  return Math.min(9.5, Math.max(4, normalTailQuantile(tau / steps)));
}

/** Composes the mechanisms on grid `h`; the grid coarsens until the window fits in `maxN` points. */
export function composeAt(
  merged: readonly SampledGaussian[],
  tau: number,
  h0: number,
  maxN: number,
  hints?: readonly [LambdaHint | undefined, LambdaHint | undefined],
): Composition {
  let h = h0;
  for (let attempt = 0; ; attempt++) {
    const rem: PldPart[] = merged.map((m) => ({ pld: discretised(m.q, m.sigma, "remove", h, tailZ(merged, tau)), count: m.steps }));
    const add: PldPart[] = merged.map((m) => ({ pld: discretised(m.q, m.sigma, "add", h, tailZ(merged, tau)), count: m.steps }));
    const wr = compositionWindow(rem, tau, hints?.[0]);
    const wa = compositionWindow(add, tau, hints?.[1]);
    const need = Math.max(wr.hi - wr.lo, wa.hi - wa.lo) + 1;
    if (need > maxN && attempt < 8) {
      h = h * (need / maxN) * 1.05;
      continue;
    }
    const n = nextPow2(need);
    const [remove, addC] = composePair(rem, add, n, [wr, wa]);
    const hintOf = (w: Window): LambdaHint => ({ upper: w.lambdaUpper, lower: w.lambdaLower });
    return { remove, add: addC, h, n, hints: [hintOf(wr), hintOf(wa)] };
  }
}

/** A grid for the composition, sized on a coarse grid; also returns the coarse windows' exponents. */
export function chooseGrid(
  merged: readonly SampledGaussian[],
  tau: number,
  opts: NumericalOptions = {},
): { h: number; hints?: [LambdaHint, LambdaHint] } {
  if (opts.h !== undefined) return { h: opts.h };
  const steps = merged.reduce((s, m) => s + m.steps, 0);
  // The discretisation error grows with the number of steps: spread wider compositions finer.
  const targetN = opts.targetN ?? Math.min(1 << 19, Math.max(1 << 16, (1 << 16) * Math.sqrt(steps / 1e4)));
  const h0 = 1e-3;
  let width = 0;
  const hints: LambdaHint[] = [];
  for (const dir of ["remove", "add"] as const) {
    const parts = merged.map((m) => ({ pld: discretised(m.q, m.sigma, dir, h0, tailZ(merged, tau)), count: m.steps }));
    const win = compositionWindow(parts, tau);
    width = Math.max(width, (win.hi - win.lo + 1) * h0);
    hints.push({ upper: win.lambdaUpper, lower: win.lambdaLower });
  }
  const h = Math.min(opts.hMax ?? 1e-2, Math.max(opts.hMin ?? 1e-6, width / targetN));
  return { h, hints: [hints[0], hints[1]] };
}

/** Composes the mechanisms on a grid chosen for them (see NumericalOptions). */
export function composeMechanisms(mechs: readonly SampledGaussian[], tau: number, opts: NumericalOptions = {}): Composition {
  const merged = mergeMechanisms(mechs);
  if (merged.length === 0) throw new RangeError("nothing to compose: every mechanism has 0 steps");
  const g = chooseGrid(merged, tau, opts);
  return composeAt(merged, tau, g.h, opts.maxN ?? 1 << 20, g.hints);
}

/** Epsilon of a composition at delta: the larger of the two directions. */
export function compositionEpsilon(c: Composition, delta: number): number {
  return Math.max(epsilonForDelta(c.remove, delta), epsilonForDelta(c.add, delta));
}

/** Exact epsilon of one step (no discretisation): bisection on the closed-form hockey stick. */
export function singleStepEpsilon(q: number, sigma: number, delta: number): number {
  const d = (e: number): number => Math.max(hockeyStick(q, sigma, "remove", e), hockeyStick(q, sigma, "add", e));
  if (d(0) <= delta) return 0;
  let lo = 0;
  let hi = 1;
  while (d(hi) > delta) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-14 * hi; i++) {
    const mid = 0.5 * (lo + hi);
    if (d(mid) > delta) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** Result of the numerical accountant. */
export interface NumericalResult {
  /** An upper bound on the exact epsilon (pessimistic discretisation; tails counted in delta). */
  readonly epsilon: number;
  /** Estimated distance from the exact epsilon: |eps(h) - eps(2h)|, 0 for an exact single step. */
  readonly error: number;
  /** Grid spacing and FFT length used. */
  readonly h: number;
  readonly n: number;
}

/** Upper bound on epsilon for the composition of `mechs` at `delta`, with an error estimate. */
export function numericalEpsilon(mechs: readonly SampledGaussian[], delta: number, opts: NumericalOptions = {}): NumericalResult {
  const merged = mergeMechanisms(mechs);
  if (merged.length === 0) return { epsilon: 0, error: 0, h: 0, n: 0 };
  if (merged.length === 1 && merged[0].steps === 1) {
    return { epsilon: singleStepEpsilon(merged[0].q, merged[0].sigma, delta), error: 1e-12, h: 0, n: 0 };
  }
  const tau = delta * (opts.relTail ?? 1e-3);
  const maxN = opts.maxN ?? 1 << 20;
  const g = chooseGrid(merged, tau, opts);
  const fine = composeAt(merged, tau, g.h, maxN, g.hints);
  const epsilon = compositionEpsilon(fine, delta);
  let error = 0;
  if (opts.errorEstimate !== false) {
    const coarse = composeAt(merged, tau, 2 * fine.h, maxN, fine.hints);
    error = Math.abs(compositionEpsilon(coarse, delta) - epsilon);
  }
  return { epsilon, error, h: fine.h, n: fine.n };
}
