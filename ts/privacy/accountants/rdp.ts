/** The RDP accountant (Mironov et al. 2019; conversion of Balle et al. 2020, Thm 21), as Opacus's. */
import { computeRdp, DEFAULT_RDP_ORDERS, rdpToEpsilon } from "../analysis/rdp.js";
import { type EpsilonResult, type Mechanism, validateDelta, validateMechanism } from "../types.js";
import { BaseAccountant } from "./accountant.js";

/** Options of the RDP accountant. */
export interface RdpOptions {
  /** RDP orders (> 1) to optimise over; Opacus's defaults when omitted. */
  readonly orders?: readonly number[];
}

/** RDP accountant: sums RDP over the history at each order and converts at the best order. */
export class RdpAccountant extends BaseAccountant {
  readonly name = "rdp" as const;
  readonly orders: readonly number[];

  constructor(opts: RdpOptions = {}) {
    super();
    this.orders = opts.orders ?? DEFAULT_RDP_ORDERS;
    if (this.orders.length === 0 || this.orders.some((a) => !(a > 1))) throw new RangeError("RDP orders must be a non-empty list of numbers > 1");
  }

  /** Total RDP of `mechanisms` at every order. */
  rdp(mechanisms: readonly Mechanism[]): number[] {
    const total = this.orders.map(() => 0);
    for (const m of mechanisms) {
      if (m.steps === 0) continue;
      computeRdp(m.q, m.sigma, m.steps, this.orders).forEach((v, i) => (total[i] += v));
    }
    return total;
  }

  epsilonOf(mechanisms: readonly Mechanism[], delta: number): EpsilonResult {
    validateDelta(delta);
    mechanisms.forEach((m, i) => validateMechanism(m, `mechanisms[${i}]`));
    if (mechanisms.every((m) => m.steps === 0)) return { epsilon: 0, delta, error: 0, accountant: "rdp" };
    const { epsilon, bestOrder } = rdpToEpsilon(this.orders, this.rdp(mechanisms), delta);
    return { epsilon, delta, error: 0, accountant: "rdp", bestOrder };
  }
}
