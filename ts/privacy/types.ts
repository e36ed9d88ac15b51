/**
 * Plain data types of the privacy layer and the argument checks every entry point shares.
 * Flags and fields use Opacus's vocabulary: sample rate q, noise multiplier sigma, steps.
 */
import { InvalidArgumentError } from "../util/errors.js";

/** A Poisson-subsampled Gaussian mechanism run `steps` times; q = 1 is the plain Gaussian. */
export interface Mechanism {
  /** Sample rate in (0, 1]: each example enters a step independently with probability q. */
  readonly q: number;
  /** Noise multiplier: noise std divided by the clipping norm C. */
  readonly sigma: number;
  /** Number of noisy steps (an integer >= 0). */
  readonly steps: number;
}

/** Names of the accountants. "prv" and "pld" name the same numerical accountant. */
export const ACCOUNTANT_NAMES = ["rdp", "pld", "prv"] as const;
export type AccountantName = (typeof ACCOUNTANT_NAMES)[number];

/** An (epsilon, delta) guarantee as an accountant reports it. */
export interface EpsilonResult {
  /** An upper bound on epsilon at `delta` (both accountants are pessimistic). */
  readonly epsilon: number;
  readonly delta: number;
  /** Estimated distance to the exact epsilon (numerical accountant); 0 for RDP, a bound by itself. */
  readonly error: number;
  readonly accountant: AccountantName;
  /** The RDP order that gave epsilon (RDP only). */
  readonly bestOrder?: number;
}

/**
 * The ranges every entry point accepts (CLI flags, config fields, the library API), chosen where
 * the accountants are numerically sound and the figures mean something:
 * - noise multiplier in [0.05, 1e4]: below about 0.04 one step's privacy loss passes e^709 (the
 *   largest double) and the numerical accountant saturates or returns 0; 0.05 leaves a margin.
 *   Above 1e4 epsilon is ~0 for any step count here. The accounted multiplier (sigma / sqrt(K)
 *   under reuse) must lie in the range too.
 * - steps an integer in [0, 1e8] (the FFT window of longer compositions outgrows memory).
 * - reuse (T_PPO = K) an integer in [1, 1e4].
 * - delta in [1e-10, 0.1]: below 1e-10 the numerical accountant's tail bounds (1e-3 delta) reach
 *   double-precision rounding and its figure degrades; above 0.1 a guarantee that fails with
 *   probability delta is no guarantee (use delta well below 1/|D|).
 * - target epsilon in (0, 100]: beyond 100 the guarantee is vacuous (e^100), and calibrating for
 *   it drives the noise multiplier below its floor.
 */
export const LIMITS = {
  sigmaMin: 0.05,
  sigmaMax: 1e4,
  stepsMax: 1e8,
  reuseMax: 1e4,
  deltaMin: 1e-10,
  deltaMax: 0.1,
  epsilonMax: 100,
} as const;

const show = (x: number): string => (typeof x === "number" ? String(x) : JSON.stringify(x));

/** Checks a sample rate, noise multiplier and step count; `where` prefixes the field names. */
export function validateMechanism(m: Mechanism, where = ""): void {
  const f = (name: string): string => (where ? `${where}.${name}` : name);
  if (!(Number.isFinite(m.q) && m.q > 0 && m.q <= 1)) throw new InvalidArgumentError(f("sample-rate"), `must be in (0, 1], got ${show(m.q)}`);
  validateSigma(m.sigma, f("noise-multiplier"));
  validateSteps(m.steps, f("steps"));
}

/** Checks that a noise multiplier lies in [LIMITS.sigmaMin, LIMITS.sigmaMax]. */
export function validateSigma(sigma: number, field = "noise-multiplier"): void {
  if (!(Number.isFinite(sigma) && sigma >= LIMITS.sigmaMin && sigma <= LIMITS.sigmaMax)) {
    throw new InvalidArgumentError(field, `must be in [${LIMITS.sigmaMin}, ${LIMITS.sigmaMax}], got ${show(sigma)}${sigma > 0 && sigma < LIMITS.sigmaMin ? " (the accountants are not numerically sound below it, and such a run gives no meaningful privacy)" : ""}`);
  }
}

/** Checks that steps is an integer in [0, LIMITS.stepsMax]. */
export function validateSteps(steps: number, field = "steps"): void {
  if (!(Number.isInteger(steps) && steps >= 0 && steps <= LIMITS.stepsMax)) {
    throw new InvalidArgumentError(field, `must be an integer in [0, ${LIMITS.stepsMax}], got ${show(steps)}`);
  }
}

/** Checks that a reuse count K (noisy steps per sampled batch, T_PPO) is an integer in [1, LIMITS.reuseMax]. */
export function validateReuse(k: number, field = "reuse"): void {
  if (!(Number.isInteger(k) && k >= 1 && k <= LIMITS.reuseMax)) throw new InvalidArgumentError(field, `must be an integer in [1, ${LIMITS.reuseMax}], got ${show(k)}`);
}

/** Checks that delta lies in [LIMITS.deltaMin, LIMITS.deltaMax]. */
export function validateDelta(delta: number, field = "delta"): void {
  if (!(Number.isFinite(delta) && delta >= LIMITS.deltaMin && delta <= LIMITS.deltaMax)) {
    throw new InvalidArgumentError(field, `must be in [${LIMITS.deltaMin}, ${LIMITS.deltaMax}], got ${show(delta)} (use delta well below 1/|D|, e.g. 1e-5 for 25,000 records)`);
  }
}

/** Checks that a target epsilon lies in (0, LIMITS.epsilonMax]. */
export function validateEpsilon(eps: number, field = "target-epsilon"): void {
  if (!(Number.isFinite(eps) && eps > 0 && eps <= LIMITS.epsilonMax)) {
    throw new InvalidArgumentError(field, `must be in (0, ${LIMITS.epsilonMax}], got ${show(eps)}${eps === Infinity ? " (a non-private run has no target epsilon to calibrate for)" : ""}`);
  }
}

/** Resolves an accountant name, listing the supported ones when it is unknown. */
export function resolveAccountant(name: string | undefined, field = "accountant"): AccountantName {
  const n = (name ?? "prv").toLowerCase();
  if ((ACCOUNTANT_NAMES as readonly string[]).includes(n)) return n as AccountantName;
  throw new InvalidArgumentError(field, `unknown accountant "${name}"; supported: ${ACCOUNTANT_NAMES.join(", ")}`);
}
