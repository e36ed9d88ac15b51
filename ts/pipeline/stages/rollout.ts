/**
 * One PPO rollout round, as data: generate responses with the policy, score them with the
 * reward model, take the reference log-probs, and turn them into per-token advantages with the
 * control plane's pure RL functions. Every row depends only on its own example (DP mode refuses
 * the batch-coupled options before this runs).
 */
import { Tensor, type TensorMap } from "../../transport/tensor.js";
import type { WorkerApi } from "../../worker/api.js";
import { klShapedRewards, gae, whiten, normalizeScores, type Rows } from "../../rl/index.js";
import type { Config } from "../config.js";
import { idsBatch } from "../tokens.js";
import { scoreTexts, REWARD_HANDLE } from "./reward.js";

export interface Rollout {
  queries: number[][];
  responses: number[][];
  logprobs: Rows;
  values: Rows;
  advantages: Rows;
  returns: Rows;
  scores: number[];
  kl: number[];
}

export interface Generated {
  responses: number[][];
  logprobs: Rows;
  values: Rows;
  texts: string[];
}

/** Generates for many prompts in chunks. */
export async function generateRows(
  api: WorkerApi, handle: string, prompts: readonly (readonly number[])[], pad: number,
  o: { maxNewTokens: number; minNewTokens: number; temperature: number; topK: number; seed: number; values: boolean }, chunk = 256,
): Promise<Generated> {
  const out: Generated = { responses: [], logprobs: [], values: [], texts: [] };
  for (let i = 0; i < prompts.length; i += chunk) {
    const part = prompts.slice(i, i + chunk);
    const g = await api.generate({
      handle, prompts: idsBatch(part, pad), maxNewTokens: o.maxNewTokens, minNewTokens: o.minNewTokens,
      temperature: o.temperature, topK: o.topK, seed: o.seed + i, returnLogprobs: true, returnValues: o.values,
    });
    const lengths = g.batch.response_lengths.toNumbers();
    out.responses.push(...g.batch.response_ids.rows(lengths));
    out.logprobs.push(...g.batch.logprobs.rows(lengths));
    if (o.values) out.values.push(...g.batch.values.rows(lengths));
    out.texts.push(...g.texts);
  }
  return out;
}

export function queryResponseBatch(queries: readonly (readonly number[])[], responses: readonly (readonly number[])[], pad: number): TensorMap {
  return { ...idsBatch(queries, pad, "query_ids", "query_lengths"), ...idsBatch(responses, pad, "response_ids", "response_lengths") };
}

export async function rollout(
  api: WorkerApi, ppo: Config["ppo"], dp: boolean, policy: string, ref: string, queries: number[][],
  pad: number, beta: number, respLen: number, seed: number,
): Promise<Rollout> {
  if (queries.length === 0) return { queries, responses: [], logprobs: [], values: [], advantages: [], returns: [], scores: [], kl: [] };
  const g = await generateRows(api, policy, queries, pad, { maxNewTokens: respLen, minNewTokens: respLen, temperature: ppo.temperature, topK: ppo.topK, seed, values: true });
  const refLogprobs: Rows = [];
  for (let i = 0; i < queries.length; i += 256) {
    const lens = g.responses.slice(i, i + 256).map((r) => r.length);
    const s = await api.scoreSequences({ handle: ref, batch: queryResponseBatch(queries.slice(i, i + 256), g.responses.slice(i, i + 256), pad), logprobs: true });
    refLogprobs.push(...s.logprobs.rows(lens));
  }
  const raw = await scoreTexts(api, REWARD_HANDLE, queries.map((q, i) => [...q, ...g.responses[i]]), pad);
  const scores = normalizeScores(raw, ppo.rewardNormalization, { dp }, { mean: ppo.rewardMean, std: ppo.rewardStd });
  const shaped = klShapedRewards(scores, g.logprobs, refLogprobs, beta);
  const { advantages, returns } = gae(shaped.rewards, g.values, ppo.gamma, ppo.lam);
  return {
    queries, responses: g.responses, logprobs: g.logprobs, values: g.values,
    advantages: whiten(advantages, ppo.whitenAdvantages, { dp }), returns, scores: raw, kl: shaped.kl,
  };
}

/** The "ppo" loss batch of the rollout rows `idx`. */
export function ppoBatch(r: Rollout, idx: readonly number[], pad: number): TensorMap {
  const pick = <T>(xs: readonly T[]) => idx.map((i) => xs[i]);
  const b = queryResponseBatch(pick(r.queries), pick(r.responses), pad);
  const w = b.response_ids.shape[1];
  const f = (rows: Rows) => Tensor.paddedFloat32(pick(rows), 0, w);
  return { ...b, old_logprobs: f(r.logprobs), old_values: f(r.values), advantages: f(r.advantages), returns: f(r.returns) };
}
