/**
 * Generalised advantage estimation (Schulman et al. 2016) over the response tokens of each
 * example, one row at a time: row i of every output depends only on row i of the inputs.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { Rows } from "./rewards.js";

export interface Advantages {
  /** [n][Lr_i] A_t = sum_k (gamma*lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t. */
  advantages: Rows;
  /** [n][Lr_i] value targets A_t + V_t. */
  returns: Rows;
}

/**
 * rewards [n][Lr_i], values [n][Lr_i] (same ragged shape), gamma and lam in [0, 1]
 * -> advantages, returns [n][Lr_i]. The value after the last response token is 0 (episode end).
 */
export function gae(rewards: Rows, values: Rows, gamma: number, lam: number): Advantages {
  if (rewards.length !== values.length) {
    throw new InvalidArgumentError("gae", `rewards has ${rewards.length} rows, values ${values.length}`);
  }
  for (const [name, v] of [["gamma", gamma], ["lam", lam]] as const) {
    if (!(v >= 0 && v <= 1)) throw new InvalidArgumentError(name, `must be in [0, 1], got ${v}`);
  }
  const advantages: Rows = [];
  const returns: Rows = [];
  for (let i = 0; i < rewards.length; i++) {
    const r = rewards[i];
    const v = values[i];
    if (r.length !== v.length) throw new InvalidArgumentError("gae", `row ${i}: ${r.length} rewards but ${v.length} values`);
    const adv = new Array<number>(r.length);
    let last = 0;
    for (let t = r.length - 1; t >= 0; t--) {
      const next = t + 1 < r.length ? v[t + 1] : 0;
      const delta = r[t] + gamma * next - v[t];
      last = delta + gamma * lam * last;
      adv[t] = last;
    }
    advantages.push(adv);
    returns.push(adv.map((a, t) => a + v[t]));
  }
  return { advantages, returns };
}

/** Discounted returns without a critic: G_t = r_t + gamma G_{t+1}. rewards [n][Lr_i] -> [n][Lr_i]. */
export function discountedReturns(rewards: Rows, gamma: number): Rows {
  return rewards.map((r) => {
    const out = new Array<number>(r.length);
    let g = 0;
    for (let t = r.length - 1; t >= 0; t--) {
      g = r[t] + gamma * g;
      out[t] = g;
    }
    return out;
  });
}
