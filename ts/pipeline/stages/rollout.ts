/**
 * One PPO rollout round, as data: generate responses with the policy, score them with the
 * reward model, take the reference log-probs, and turn them into per-token advantages with the
 * control plane's pure RL functions. Every row depends only on its own example (DP mode refuses
 * the batch-coupled options before this runs).
 */
import type { Policy, Reference, RewardModel } from "../../worker/roles.js";
import type { PpoRows } from "../../worker/batches.js";
import { klShapedRewards, gae, whiten, normalizeScores, type Rows } from "../../rl/index.js";
import type { Config } from "../config.js";
import type { PhaseClock } from "../timing.js";

export interface Rollout extends PpoRows {
  queries: number[][];
  responses: number[][];
  logprobs: Rows;
  values: Rows;
  advantages: Rows;
  returns: Rows;
  scores: number[];
  kl: number[];
}

export interface RolloutModels {
  policy: Policy;
  ref: Reference;
  reward: RewardModel;
}

export async function rollout(
  m: RolloutModels, ppo: Config["ppo"], dp: boolean, queries: number[][], pad: number, beta: number, respLen: number, seed: number,
  clock?: PhaseClock,
): Promise<Rollout> {
  if (queries.length === 0) return { queries, responses: [], logprobs: [], values: [], advantages: [], returns: [], scores: [], kl: [] };
  const timed = <T>(phase: string, fn: () => Promise<T>) => (clock ? clock.time(phase, fn) : fn());
  const g = await timed("generate (policy + values)", () => m.policy.generate(queries, pad, { maxNewTokens: respLen, minNewTokens: respLen, temperature: ppo.temperature, topK: ppo.topK, seed, values: true }));
  const refLogprobs = await timed("reference log-probs", () => m.ref.logprobs(queries, g.responses, pad));
  const raw = await timed("reward scoring", () => m.reward.scorePairs(queries, g.responses, pad));
  const scores = normalizeScores(raw, ppo.rewardNormalization, { dp }, { mean: ppo.rewardMean, std: ppo.rewardStd });
  const shaped = klShapedRewards(scores, g.logprobs, refLogprobs, beta);
  const { advantages, returns } = gae(shaped.rewards, g.values, ppo.gamma, ppo.lam);
  return {
    queries, responses: g.responses, logprobs: g.logprobs, values: g.values,
    advantages: whiten(advantages, ppo.whitenAdvantages, { dp }), returns, scores: raw, kl: shaped.kl,
  };
}
