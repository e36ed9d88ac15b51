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

/** Checks a sample rate, noise multiplier and step count; `where` prefixes the field names. */
export function validateMechanism(m: Mechanism, where = ""): void {
  const f = (name: string): string => (where ? `${where}.${name}` : name);
  if (!(Number.isFinite(m.q) && m.q > 0 && m.q <= 1)) throw new InvalidArgumentError(f("sample-rate"), `must be in (0, 1], got ${m.q}`);
  if (!(Number.isFinite(m.sigma) && m.sigma > 0)) throw new InvalidArgumentError(f("noise-multiplier"), `must be a positive number, got ${m.sigma}`);
  validateSteps(m.steps, f("steps"));
}

/** Checks that steps is a non-negative integer. */
export function validateSteps(steps: number, field = "steps"): void {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new InvalidArgumentError(field, `must be a non-negative integer, got ${steps}`);
}

/** Checks that delta lies in (0, 1). */
export function validateDelta(delta: number, field = "delta"): void {
  if (!(Number.isFinite(delta) && delta > 0 && delta < 1)) throw new InvalidArgumentError(field, `must be in (0, 1), got ${delta}`);
}

/** Checks that a target epsilon is a positive finite number. */
export function validateEpsilon(eps: number, field = "target-epsilon"): void {
  if (!(Number.isFinite(eps) && eps > 0)) throw new InvalidArgumentError(field, `must be a positive number, got ${eps}`);
}

/** Resolves an accountant name, listing the supported ones when it is unknown. */
export function resolveAccountant(name: string | undefined, field = "accountant"): AccountantName {
  const n = (name ?? "prv").toLowerCase();
  if ((ACCOUNTANT_NAMES as readonly string[]).includes(n)) return n as AccountantName;
  throw new InvalidArgumentError(field, `unknown accountant "${name}"; supported: ${ACCOUNTANT_NAMES.join(", ")}`);
}
