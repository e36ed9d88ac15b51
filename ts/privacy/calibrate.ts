/**
 * Noise calibration: the smallest noise multiplier whose epsilon stays at or below a target,
 * found by regula falsi (Illinois) in log sigma inside a bracket; the numerical accountant's
 * bracket is seeded by the (cheap, looser) RDP calibration.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { AccountantOptions } from "./accountants/index.js";
import { epsilon } from "./epsilon.js";
import { type AccountantName, type EpsilonResult, LIMITS, type Mechanism, resolveAccountant, validateDelta, validateEpsilon, validateMechanism } from "./types.js";

/** Arguments of `calibrateSigma`. */
export interface CalibrateArgs {
  readonly q: number;
  readonly steps: number;
  readonly targetEpsilon: number;
  readonly delta: number;
  readonly accountant?: AccountantName | string;
  /** Mechanisms that also run (sequential composition), e.g. earlier stages; none by default. */
  readonly others?: readonly Mechanism[];
  /** Relative tolerance: sigma to this relative width, or epsilon within it below target (5e-4). */
  readonly tolerance?: number;
  readonly options?: AccountantOptions;
}

/** Result of a calibration: sigma, and the guarantee it gives. */
export interface Calibration {
  /** The noise multiplier: epsilon(noise_multiplier) <= targetEpsilon. */
  readonly sigma: number;
  readonly result: EpsilonResult;
  /** Accountant evaluations used. */
  readonly evaluations: number;
}

const SIGMA_MIN = LIMITS.sigmaMin;
const SIGMA_MAX = LIMITS.sigmaMax;

/**
 * Smallest sigma (to `tolerance`) with epsilon <= targetEpsilon for q, steps, delta. The search
 * stays in [LIMITS.sigmaMin, LIMITS.sigmaMax]: when even the smallest multiplier meets the target
 * (a loose target, or q * steps below delta), that multiplier is returned with its epsilon.
 */
export function calibrateSigma(args: CalibrateArgs): Calibration {
  validateMechanism({ q: args.q, sigma: 1, steps: args.steps });
  validateEpsilon(args.targetEpsilon);
  validateDelta(args.delta);
  if (args.steps === 0) throw new InvalidArgumentError("steps", "must be at least 1 to calibrate noise");
  const name = resolveAccountant(args.accountant);
  const tol = args.tolerance ?? 5e-4;
  const others = args.others ?? [];
  let evaluations = 0;
  const evalAt = (sigma: number, errorEstimate = false, grid: AccountantOptions = {}): EpsilonResult => {
    evaluations++;
    const options = { ...args.options, ...grid, errorEstimate };
    return epsilon({ mechanisms: [...others, { q: args.q, sigma, steps: args.steps }], delta: args.delta, accountant: name, options });
  };
  const target = args.targetEpsilon;
  // Numerical accountant: search on a coarse grid, then confirm on the fine one (every grid
  // gives an upper bound, and the fine one is the tighter); RDP is cheap and searched directly.
  const coarseGrid: AccountantOptions = name === "rdp" ? {} : { targetN: 1 << 14 };
  const search = (s: number): number => evalAt(s, false, coarseGrid).epsilon;
  // Bracket [lo, hi] with eps(lo) > target >= eps(hi); RDP's sigma (looser) seeds the numerical one.
  let hi = name === "rdp" ? 1 : calibrateSigma({ ...args, accountant: "rdp", tolerance: 1e-3 }).sigma;
  let epsHi = search(hi);
  while (epsHi > target) {
    if (hi >= SIGMA_MAX) throw new InvalidArgumentError("target-epsilon", `no noise multiplier up to ${SIGMA_MAX} reaches epsilon ${target}; the other mechanisms alone may exceed it`);
    hi = Math.min(hi * 2, SIGMA_MAX);
    epsHi = search(hi);
  }
  let lo = Math.max(SIGMA_MIN, name === "rdp" ? hi / 2 : hi * 0.85);
  let epsLo = search(lo);
  while (epsLo <= target) {
    if (lo <= SIGMA_MIN) {
      // The floor meets the target (on the search grid): return it if the final figure agrees.
      const r = evalAt(SIGMA_MIN, name !== "rdp");
      if (r.epsilon <= target) return { sigma: SIGMA_MIN, result: r, evaluations };
      epsLo = r.epsilon;
      break;
    }
    [hi, epsHi] = [lo, epsLo];
    lo = Math.max(lo / 2, SIGMA_MIN);
    epsLo = search(lo);
  }
  // Illinois regula falsi on g(u) = eps(e^u) - target in u = log sigma; g(a) > 0 >= g(b).
  let a = Math.log(lo);
  let b = Math.log(hi);
  let ga = Math.min(epsLo, 1e3 * target) - target;
  let gb = epsHi - target;
  let [gaTrue, gbTrue] = [ga, gb];
  let side = 0;
  for (let i = 0; i < 100 && b - a > tol && gb < -tol * target; i++) {
    let u = (a * gb - b * ga) / (gb - ga);
    if (!(u > a && u < b) || b - a > 0.5) u = 0.5 * (a + b);
    const g = search(Math.exp(u)) - target;
    if (g > 0) {
      [a, ga, gaTrue] = [u, g, g];
      if (side === -1) gb /= 2;
      side = -1;
    } else {
      [b, gb, gbTrue] = [u, g, g];
      if (side === 1) ga /= 2;
      side = 1;
    }
  }
  if (name === "rdp") {
    const sigma = Math.exp(b);
    return { sigma, result: evalAt(sigma), evaluations };
  }
  // Confirm on the fine grid; step down (Newton in log sigma, with the bracket's slope) while it
  // leaves more than the tolerance unused, and up if the fine figure were ever the larger.
  const slope = Math.max((gaTrue - gbTrue) / Math.max(b - a, 1e-12), 1e-9); // -d eps / d log sigma
  let u = b;
  let best: { sigma: number; result: EpsilonResult } | undefined;
  for (let i = 0; i < 8; i++) {
    const r = evalAt(Math.exp(u), true);
    const g = r.epsilon - target;
    if (g <= 0) {
      best = { sigma: Math.exp(u), result: r };
      if (g >= -tol * target) break;
      u += g / slope * 0.9;
    } else {
      if (best) break;
      u += g / slope + tol;
    }
  }
  if (best) return { ...best, evaluations };
  let sigma = Math.exp(b) * 1.01;
  let result = evalAt(sigma, true);
  while (result.epsilon > target) {
    if (sigma >= SIGMA_MAX) throw new InvalidArgumentError("target-epsilon", `no noise multiplier up to ${SIGMA_MAX} reaches epsilon ${target}`);
    sigma = Math.min(sigma * 1.05, SIGMA_MAX);
    result = evalAt(sigma, true);
  }
  return { sigma, result, evaluations };
}
