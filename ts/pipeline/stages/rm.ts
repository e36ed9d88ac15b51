/**
 * Scenario rlhf: the DP reward model on D2 (PAPER.md Eq. 1). Its preference pairs come from a gold
 * labeller: each D2 prefix gets two completions sampled from the (already private) SFT model, and
 * the public sentiment classifier says which one is preferred. A pair is one example: Poisson
 * sampling, per-pair clipping, noise and the ledger are those of every DP stage (stages/loop.ts);
 * nothing couples the pairs of a batch. The model is the public pretrained base with LoRA and a
 * scalar head, as the paper trains every reward model from the base model. Its accuracy and loss
 * are measured on pairs built the same way from public held-out prefixes (releasable).
 */
import type { Rows } from "../../worker/batches.js";
import { Generator, RewardModel, WorkerModel } from "../../worker/roles.js";
import { pairText, type PreferencePair } from "../data/preferences.js";
import { tailChars, tokenizeRows } from "../tokens.js";
import { effectiveStages } from "../config.js";
import { adamw, modelSpec, type PipelineContext } from "../context.js";
import { openStage, type StageHooks } from "./common.js";
import { dpStageLoop } from "./loop.js";
import { membersDigest } from "./membership.js";
import { batchIndices } from "./sft.js";

export const RM_HANDLE = "dp-rm";
/** The trained DP reward model, loaded for scoring PPO rollouts. */
export const RM_SERVE_HANDLE = "dp-rm-serve";

/** What the stage releases: planned counts, time, its checkpoint, and its quality on public held-out pairs. */
export interface RmResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  /** Fraction of public held-out pairs the DP reward model orders as the gold labeller does. */
  heldOutAccuracy: number;
  /** Mean Eq. 1 loss on those pairs. */
  heldOutLoss: number;
  heldOutPairs: number;
  wallS: number;
}

export interface Pairs {
  chosen: number[][];
  rejected: number[][];
}

/** Two sampled completions per prefix, ordered by the gold reward (ties keep the first). */
export async function goldPairs(
  generator: Generator, gold: RewardModel, prefixes: Rows, pad: number, o: { responseTokens: number; temperature: number; seed: number },
): Promise<Pairs> {
  if (prefixes.length === 0) return { chosen: [], rejected: [] };
  const g = await generator.generate([...prefixes, ...prefixes], pad, {
    maxNewTokens: o.responseTokens, minNewTokens: o.responseTokens, temperature: o.temperature, topK: 0, seed: o.seed, values: false,
  });
  const n = prefixes.length;
  const seqs = g.responses.map((r, i) => [...prefixes[i % n], ...r]);
  const scores = await gold.score(seqs, pad);
  const out: Pairs = { chosen: [], rejected: [] };
  for (let i = 0; i < n; i++) {
    const aFirst = scores[i] >= scores[n + i];
    out.chosen.push(aFirst ? seqs[i] : seqs[n + i]);
    out.rejected.push(aFirst ? seqs[n + i] : seqs[i]);
  }
  return out;
}

/** Accuracy and mean Eq. 1 loss of a reward model on pairs. */
export async function pairAccuracy(rm: RewardModel, pairs: Pairs, pad: number): Promise<{ accuracy: number; loss: number }> {
  const n = pairs.chosen.length;
  if (n === 0) return { accuracy: NaN, loss: NaN };
  const s = await rm.score([...pairs.chosen, ...pairs.rejected], pad);
  let right = 0;
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const m = s[i] - s[n + i];
    if (m > 0) right++;
    loss += Math.log1p(Math.exp(-Math.abs(m))) + Math.max(0, -m); // -log sigmoid(m), stable
  }
  return { accuracy: right / n, loss: loss / n };
}

/** Scenario rlhf: gold-labelled pairs from D2 prefixes and the DP SFT model, then the DP reward model on them. */
export async function runRm(ctx: PipelineContext, d2Prefixes: number[][], heldOutPrefixes: number[][], sftCheckpoint: string, hooks?: StageHooks): Promise<RmResult> {
  const { cfg, base, run } = ctx;
  const rng = ctx.rng.fork("rm");
  // Pairs from the DP SFT model, labelled by the public classifier (post-processing of DP outputs and public data).
  const sampler = new Generator(ctx.api, "rm-pairs");
  await sampler.load(modelSpec(cfg, base, { initCheckpoint: run.resolve(sftCheckpoint) }));
  const sample = { responseTokens: cfg.rm.responseTokens, temperature: cfg.rm.temperature };
  const pairs = await goldPairs(sampler, ctx.reward, d2Prefixes, base.padId, { ...sample, seed: Number(rng.fork("pairs").seedForChild() >> 12n) });
  const heldOut = await goldPairs(sampler, ctx.reward, heldOutPrefixes, base.padId, { ...sample, seed: 54321 + cfg.data.publicSeed });
  await sampler.unload();
  return trainRewardModel(ctx, pairs, heldOut, hooks);
}

/** Scenario reward-model: human preference pairs (text) tokenized to their last rm.maxTokens tokens, then the DP reward model. */
export async function runRmOnPreferences(ctx: PipelineContext, priv: readonly PreferencePair[], heldOut: readonly PreferencePair[], hooks?: StageHooks): Promise<RmResult> {
  const tok = new WorkerModel(ctx.api, "rm-tokenizer");
  await tok.load(modelSpec(ctx.cfg, ctx.base, {}));
  const max = ctx.cfg.rm.maxTokens;
  const rows = async (texts: string[]) => (await tokenizeRows(tok, texts.map((t) => tailChars(t, max)), 0, 500)).map((r) => r.slice(-max));
  const toPairs = async (ps: readonly PreferencePair[]): Promise<Pairs> => ({
    chosen: await rows(ps.map((p) => pairText(p.prompt, p.chosen))),
    rejected: await rows(ps.map((p) => pairText(p.prompt, p.rejected))),
  });
  const [a, b] = [await toPairs(priv), await toPairs(heldOut)];
  await tok.unload();
  return trainRewardModel(ctx, a, b, hooks);
}

/**
 * The DP reward-model stage on given pairs: the public pretrained base with LoRA and a scalar
 * head, one pair per example through dpStageLoop, then accuracy and loss on public held-out pairs.
 */
export async function trainRewardModel(ctx: PipelineContext, pairs: Pairs, heldOut: Pairs, hooks?: StageHooks): Promise<RmResult> {
  const t0 = Date.now();
  const plan = ctx.plan.rm;
  if (!plan) throw new RangeError("a reward-model stage needs a plan with one");
  const { rm: rmCfg } = effectiveStages(ctx.cfg);
  const { cfg, base, run } = ctx;
  const pad = base.padId;
  const rng = ctx.rng.fork("rm");
  const rm = new RewardModel(ctx.api, RM_HANDLE);
  await rm.load(modelSpec(cfg, base, { lora: true, rewardHead: true, rewardPooling: cfg.rm.pooling }), adamw(rmCfg.weightDecay));
  const guard = await openStage(ctx, plan, RM_HANDLE, rng);
  const n = pairs.chosen.length;
  await dpStageLoop(ctx, {
    stage: "rm", label: plan.dp ? "DP-RM" : "RM", handle: RM_HANDLE, guard, groupSize: 1, groupsPerCommit: cfg.checkpointEvery,
    async runGroup(t, _n, check) {
      const idx = batchIndices(plan.dp, n, plan.batchSize, plan.q, t, rng);
      const r = await rm.trainPairwise(idx.map((i) => pairs.chosen[i]), idx.map((i) => pairs.rejected[i]), pad, {
        dp: guard.dpSpec(t), lr: rmCfg.lr, microBatchSize: rmCfg.microBatchSize,
      });
      check(r, idx.length);
      return { metrics: { examples: r.examples, members: membersDigest(idx), loss: r.loss, accuracy: r.metrics.accuracy ?? NaN, fractionClipped: r.fractionClipped }, info: `loss ${r.loss.toFixed(3)}` };
    },
  }, hooks);
  const quality = await pairAccuracy(rm, heldOut, pad);
  await rm.unload();
  return {
    checkpoint: run.rel(run.checkpoint("rm", "last")), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps,
    heldOutAccuracy: quality.accuracy, heldOutLoss: quality.loss, heldOutPairs: heldOut.chosen.length, wallS: (Date.now() - t0) / 1000,
  };
}

/** The trained DP reward model, loaded for scoring (PPO's reward in scenario rlhf). */
export async function loadDpRewardModel(ctx: PipelineContext, checkpoint: string): Promise<RewardModel> {
  const model = new RewardModel(ctx.api, RM_SERVE_HANDLE);
  await model.load(modelSpec(ctx.cfg, ctx.base, { rewardHead: true, rewardPooling: ctx.cfg.rm.pooling, initCheckpoint: ctx.run.resolve(checkpoint) }));
  return model;
}
