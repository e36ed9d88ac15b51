/** One-call epsilon for a list of mechanisms, with either accountant. */
import { type AccountantOptions, createAccountant, RdpAccountant } from "./accountants/index.js";
import { rdpToEpsilon } from "./analysis/rdp.js";
import { type AccountantName, type EpsilonResult, type Mechanism, resolveAccountant, validateDelta, validateMechanism } from "./types.js";

/** Arguments of `epsilon`. */
export interface EpsilonArgs {
  /** The mechanisms composed sequentially (one user may be in all of them). */
  readonly mechanisms: readonly Mechanism[];
  readonly delta: number;
  /** "prv" (default), "pld" (the same numerical accountant) or "rdp". */
  readonly accountant?: AccountantName | string;
  readonly options?: AccountantOptions;
}

/**
 * Above this epsilon (by the RDP bound) the numerical accountant is not run: its FFT window for
 * such compositions can outgrow memory or lose the mass it must count (seen from about 1e7, e.g.
 * q 0.01, sigma 0.05, 1e7 steps), and no figure there means any privacy.
 */
export const NUMERICAL_EPSILON_MAX = 1e4;

/**
 * Epsilon at `delta` of the sequential composition of `mechanisms`. For the numerical accountant,
 * a composition whose RDP bound exceeds NUMERICAL_EPSILON_MAX gets that RDP bound (an upper bound
 * too, labelled accountant "rdp") instead of a numerical figure.
 */
export function epsilon(args: EpsilonArgs): EpsilonResult {
  const name = resolveAccountant(args.accountant);
  const acc = createAccountant(name, args.options);
  if (name !== "rdp") {
    validateDelta(args.delta);
    args.mechanisms.forEach((m, i) => validateMechanism(m, `mechanisms[${i}]`));
    // RDP is additive in steps: same-(q, sigma) mechanisms merged give the same bound, cheaply.
    const merged = new Map<string, Mechanism>();
    for (const m of args.mechanisms) {
      if (m.steps === 0) continue;
      const key = `${m.q}|${m.sigma}`;
      const prev = merged.get(key);
      merged.set(key, prev ? { ...prev, steps: prev.steps + m.steps } : m);
    }
    if (merged.size > 0) {
      const rdp = new RdpAccountant();
      const { epsilon: bound, bestOrder } = rdpToEpsilon(rdp.orders, rdp.rdp([...merged.values()]), args.delta);
      if (bound > NUMERICAL_EPSILON_MAX) return { epsilon: bound, delta: args.delta, error: 0, accountant: "rdp", bestOrder };
    }
  }
  return acc.epsilonOf(args.mechanisms, args.delta);
}
