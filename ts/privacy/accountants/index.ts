/** The accountant registry: build an accountant by name. */
import type { NumericalOptions } from "../analysis/numerical.js";
import { type AccountantName, resolveAccountant } from "../types.js";
import type { Accountant } from "./accountant.js";
import { PldAccountant } from "./pld.js";
import { RdpAccountant, type RdpOptions } from "./rdp.js";

export type { Accountant } from "./accountant.js";
export { PldAccountant } from "./pld.js";
export { RdpAccountant, type RdpOptions } from "./rdp.js";

/** Options for any accountant; each uses the fields that concern it. */
export type AccountantOptions = RdpOptions & NumericalOptions;

/** Creates an accountant by name ("rdp", "pld" or "prv"); unknown names list the supported ones. */
export function createAccountant(name: AccountantName | string = "prv", opts: AccountantOptions = {}): Accountant {
  const n = resolveAccountant(name);
  if (n === "rdp") return new RdpAccountant({ orders: opts.orders });
  return new PldAccountant({ ...opts, name: n });
}
