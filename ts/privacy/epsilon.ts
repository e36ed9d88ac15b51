/** One-call epsilon for a list of mechanisms, with either accountant. */
import { type AccountantOptions, createAccountant } from "./accountants/index.js";
import { type AccountantName, type EpsilonResult, type Mechanism, resolveAccountant } from "./types.js";

/** Arguments of `epsilon`. */
export interface EpsilonArgs {
  /** The mechanisms composed sequentially (one user may be in all of them). */
  readonly mechanisms: readonly Mechanism[];
  readonly delta: number;
  /** "prv" (default), "pld" (the same numerical accountant) or "rdp". */
  readonly accountant?: AccountantName | string;
  readonly options?: AccountantOptions;
}

/** Epsilon at `delta` of the sequential composition of `mechanisms`. */
export function epsilon(args: EpsilonArgs): EpsilonResult {
  const acc = createAccountant(resolveAccountant(args.accountant), args.options);
  return acc.epsilonOf(args.mechanisms, args.delta);
}
