/**
 * Evaluation: completions of the held-out prompts by the pretrained model (eps = 0), the SFT
 * model and the aligned policy, scored by the public reward; mean reward with a 95% CI over
 * prompts, and samples prefix -> completion. Same prompts, lengths and sampling seed for every model.
 */
import type { PipelineContext } from "../context.js";
import { modelSpec } from "../context.js";
import { Generator, type RewardModel } from "../../worker/roles.js";
import { meanRouge } from "../../eval/rouge.js";

export interface ModelEval {
  model: string;
  meanReward: number;
  ci95: number;
  n: number;
  /** Mean reward (95% CI over prompts) by the evaluation reward model (scenario rlhf). */
  evalRm?: { meanReward: number; ci95: number };
  /** ROUGE-1/2/L F1 x 100 of the completions against the reviews' real continuations (when given). */
  rouge?: { rouge1: number; rouge2: number; rougeL: number };
  samples: { prefix: string; completion: string; reward: number; reference?: string }[];
}

export function meanCi(xs: readonly number[]): { mean: number; ci95: number } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, ci95: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, ci95: NaN };
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return { mean, ci95: (tQuantile975(n - 1) * sd) / Math.sqrt(n) };
}

/** Two-sided 95% Student-t quantile (table for small df, normal beyond). */
export function tQuantile975(df: number): number {
  const table = [NaN, 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086];
  if (df < table.length) return table[df];
  if (df < 30) return 2.05;
  if (df < 60) return 2.01;
  if (df < 120) return 1.99;
  return 1.96;
}

export async function evaluateModel(
  ctx: PipelineContext, name: string, checkpoint: string, prompts: number[][], references?: readonly string[], evalRm?: RewardModel,
): Promise<ModelEval> {
  const { cfg, base } = ctx;
  const model = new Generator(ctx.api, `eval-${name}`);
  await model.load(modelSpec(cfg, base, { initCheckpoint: checkpoint }));
  const ev = cfg.eval;
  const g = await model.generate(prompts, base.padId, {
    maxNewTokens: ev.maxNewTokens, minNewTokens: ev.maxNewTokens, temperature: ev.temperature, topK: 0, seed: 12345 + cfg.data.publicSeed, values: false,
  });
  const seqs = prompts.map((p, i) => [...p, ...g.responses[i]]);
  const rewards = await ctx.reward.scorePairs(prompts, g.responses, base.padId);
  const byEvalRm = evalRm ? meanCi(await evalRm.score(seqs, base.padId)) : undefined;
  const prefixes = await model.decode(prompts.slice(0, Math.min(ev.samples, prompts.length)), base.padId);
  await model.unload();
  const { mean, ci95 } = meanCi(rewards);
  const rouge = references?.length ? meanRouge(g.texts.map((candidate, i) => ({ candidate, reference: references[i] }))) : undefined;
  return {
    model: name, meanReward: mean, ci95, n: rewards.length,
    ...(byEvalRm ? { evalRm: { meanReward: byEvalRm.mean, ci95: byEvalRm.ci95 } } : {}),
    ...(rouge ? { rouge: { rouge1: rouge.rouge1, rouge2: rouge.rouge2, rougeL: rouge.rougeL } } : {}),
    samples: prefixes.map((prefix, i) => ({ prefix, completion: g.texts[i], reward: rewards[i], ...(references ? { reference: references[i] } : {}) })),
  };
}
