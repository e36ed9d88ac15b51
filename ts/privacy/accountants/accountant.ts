/**
 * The accountant interface (after Opacus's `IAccountant`): state is the history of mechanisms,
 * the math is stateless in ../analysis. Each accountant lives in its own file; `createAccountant`
 * builds one by name.
 */
import type { AccountantName, EpsilonResult, Mechanism } from "../types.js";

/** Tracks executed mechanisms and reports the (epsilon, delta) guarantee of their composition. */
export interface Accountant {
  readonly name: AccountantName;
  /** Every mechanism recorded so far, in order. */
  readonly history: readonly Mechanism[];
  /** Records `steps` (default 1) steps with noise multiplier sigma at sample rate q. */
  step(m: { q: number; sigma: number; steps?: number }): void;
  /** Epsilon of the whole history at `delta`. */
  getEpsilon(delta: number): EpsilonResult;
  /** Epsilon of an arbitrary list of mechanisms, without touching the history. */
  epsilonOf(mechanisms: readonly Mechanism[], delta: number): EpsilonResult;
  /** The history as a plain object, and back (for checkpoints). */
  stateDict(): { name: AccountantName; history: Mechanism[] };
  loadStateDict(state: { history: readonly Mechanism[] }): void;
}

/** Shared history handling for accountants. */
export abstract class BaseAccountant implements Accountant {
  abstract readonly name: AccountantName;
  protected readonly mechanisms: Mechanism[] = [];

  get history(): readonly Mechanism[] {
    return this.mechanisms;
  }

  step(m: { q: number; sigma: number; steps?: number }): void {
    const steps = m.steps ?? 1;
    const last = this.mechanisms[this.mechanisms.length - 1];
    if (last && last.q === m.q && last.sigma === m.sigma) this.mechanisms[this.mechanisms.length - 1] = { ...last, steps: last.steps + steps };
    else this.mechanisms.push({ q: m.q, sigma: m.sigma, steps });
  }

  getEpsilon(delta: number): EpsilonResult {
    return this.epsilonOf(this.mechanisms, delta);
  }

  abstract epsilonOf(mechanisms: readonly Mechanism[], delta: number): EpsilonResult;

  stateDict(): { name: AccountantName; history: Mechanism[] } {
    return { name: this.name, history: this.mechanisms.map((m) => ({ ...m })) };
  }

  loadStateDict(state: { history: readonly Mechanism[] }): void {
    this.mechanisms.length = 0;
    for (const m of state.history) this.mechanisms.push({ ...m });
  }
}
