/**
 * KL-shaped per-token rewards (PAPER.md Eq. 2):
 *   R(x, y) = r(x, y) - beta * log( pi(y|x) / LM_sft(y|x) )
 * spread over the response tokens as in Ziegler et al. / TRL: every token t gets
 * -beta * (logp_t - ref_logp_t), and the last real token additionally gets the sequence score.
 *
 * Everything here is per example: row i of the output depends only on row i of the inputs, so
 * these functions are safe inside a DP stage (DESIGN.md rule 2).
 */
import { InvalidArgumentError } from "../util/errors.js";

/** Ragged rows: rows[i] has the response length of example i. */
export type Rows = number[][];

export interface ShapedRewards {
  /** [n][Lr_i] per-token rewards. */
  rewards: Rows;
  /** [n] per-example KL estimate sum_t (logp_t - ref_logp_t). */
  kl: number[];
  /** [n] the non-KL part of the reward (the sequence score). */
  scores: number[];
}

/**
 * scores [n], logprobs [n][Lr_i], refLogprobs [n][Lr_i] (same ragged shape), beta >= 0
 * -> rewards [n][Lr_i], kl [n]. An empty response (Lr_i = 0) gets no token and no reward.
 */
export function klShapedRewards(scores: readonly number[], logprobs: Rows, refLogprobs: Rows, beta: number): ShapedRewards {
  if (scores.length !== logprobs.length || logprobs.length !== refLogprobs.length) {
    throw new InvalidArgumentError("klShapedRewards", `scores (${scores.length}), logprobs (${logprobs.length}) and refLogprobs (${refLogprobs.length}) must have one row per example`);
  }
  if (!(beta >= 0)) throw new InvalidArgumentError("beta", `must be >= 0, got ${beta}`);
  const rewards: Rows = [];
  const kl: number[] = [];
  for (let i = 0; i < scores.length; i++) {
    const lp = logprobs[i];
    const ref = refLogprobs[i];
    if (lp.length !== ref.length) {
      throw new InvalidArgumentError("klShapedRewards", `row ${i}: logprobs has ${lp.length} tokens, refLogprobs ${ref.length}`);
    }
    const row = lp.map((l, t) => -beta * (l - ref[t]));
    if (row.length > 0) row[row.length - 1] += scores[i];
    rewards.push(row);
    kl.push(lp.reduce((a, l, t) => a + (l - ref[t]), 0));
  }
  return { rewards, kl, scores: scores.slice() };
}
