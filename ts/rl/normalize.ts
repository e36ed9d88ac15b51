/**
 * Advantage whitening and reward normalisation. The batch versions couple examples: the value
 * for example i depends on every other example in the batch, which breaks per-example
 * independence (DESIGN.md rule 2) inside a DP stage. They are refused in DP mode; the
 * per-example version (statistics over one example's own tokens) is the DP-safe replacement.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { Rows } from "./rewards.js";

export type WhitenMode = "none" | "batch" | "per_example";
export const WHITEN_MODES: readonly WhitenMode[] = ["none", "batch", "per_example"];

export interface DpContext {
  /** true inside a DP stage (finite epsilon). */
  dp: boolean;
}

function meanStd(xs: readonly number[]): [number, number] {
  if (xs.length === 0) return [0, 1];
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  return [mean, Math.sqrt(variance)];
}

/** Throws when a batch statistic would be used on private examples. */
export function assertNoBatchCoupling(what: string, ctx: DpContext): void {
  if (ctx.dp) {
    throw new InvalidArgumentError(
      what,
      "batch statistics couple examples and are refused in DP mode (DESIGN.md rule 2); use \"none\" or \"per_example\"",
    );
  }
}

/**
 * values [n][Lr_i] -> [n][Lr_i] whitened to zero mean and unit std.
 * - "none": unchanged copy.
 * - "batch": statistics over all tokens of all examples (refused in DP mode).
 * - "per_example": statistics over the tokens of row i only (DP-safe).
 */
export function whiten(values: Rows, mode: WhitenMode, ctx: DpContext, eps = 1e-8): Rows {
  switch (mode) {
    case "none":
      return values.map((r) => r.slice());
    case "batch": {
      assertNoBatchCoupling("ppo.whitenAdvantages", ctx);
      const [m, s] = meanStd(values.flat());
      return values.map((r) => r.map((x) => (x - m) / (s + eps)));
    }
    case "per_example":
      return values.map((r) => {
        if (r.length < 2) return r.map(() => 0);
        const [m, s] = meanStd(r);
        return r.map((x) => (x - m) / (s + eps));
      });
    default:
      throw new InvalidArgumentError("ppo.whitenAdvantages", `unknown mode ${String(mode)}; supported: ${WHITEN_MODES.join(", ")}`);
  }
}

export type RewardNormMode = "none" | "batch" | "fixed";
export const REWARD_NORM_MODES: readonly RewardNormMode[] = ["none", "batch", "fixed"];

/**
 * scores [n] -> [n]. "fixed" uses a mean and std given in the config or computed on public data
 * (DP-safe); "batch" uses this batch's statistics (refused in DP mode).
 */
export function normalizeScores(scores: readonly number[], mode: RewardNormMode, ctx: DpContext, fixed?: { mean: number; std: number }): number[] {
  switch (mode) {
    case "none":
      return scores.slice();
    case "batch": {
      assertNoBatchCoupling("ppo.rewardNormalization", ctx);
      const [m, s] = meanStd(scores);
      return scores.map((x) => (x - m) / (s + 1e-8));
    }
    case "fixed": {
      if (!fixed || !(fixed.std > 0)) throw new InvalidArgumentError("ppo.rewardNormalization", "\"fixed\" needs a mean and a positive std");
      return scores.map((x) => (x - fixed.mean) / fixed.std);
    }
    default:
      throw new InvalidArgumentError("ppo.rewardNormalization", `unknown mode ${String(mode)}; supported: ${REWARD_NORM_MODES.join(", ")}`);
  }
}
