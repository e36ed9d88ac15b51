/**
 * The tight numerical accountant: privacy loss distributions (the privacy random variables of
 * Gopi et al. 2021, which the paper uses) discretised pessimistically and composed by FFT. The
 * epsilon is an upper bound; `error` estimates its distance from the exact value.
 */
import { numericalEpsilon, type NumericalOptions } from "../analysis/numerical.js";
import { type AccountantName, type EpsilonResult, type Mechanism, validateDelta, validateMechanism } from "../types.js";
import { BaseAccountant } from "./accountant.js";

/** The PLD/PRV accountant; `name` is "pld" or "prv" (the same computation). */
export class PldAccountant extends BaseAccountant {
  readonly name: AccountantName;
  readonly options: NumericalOptions;

  constructor(opts: NumericalOptions & { name?: "pld" | "prv" } = {}) {
    super();
    const { name, ...numerical } = opts;
    this.name = name ?? "pld";
    this.options = numerical;
  }

  epsilonOf(mechanisms: readonly Mechanism[], delta: number): EpsilonResult {
    validateDelta(delta);
    mechanisms.forEach((m, i) => validateMechanism(m, `mechanisms[${i}]`));
    const r = numericalEpsilon(mechanisms, delta, this.options);
    return { epsilon: r.epsilon, delta, error: r.error, accountant: this.name };
  }
}
