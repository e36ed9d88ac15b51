/**
 * DP-SFT on D1 (or non-private SFT on all of D): causal-LM loss on the review text, one noisy
 * step per Poisson-sampled batch with the planned sigma; ledger record and checkpoint every
 * `checkpointEvery` batches, so an interrupted stage resumes where its last commit left it.
 */
import type { Rng } from "../../util/rng.js";
import { LanguageModel } from "../../worker/roles.js";
import { effectiveStages } from "../config.js";
import { adamw, lrAt, modelSpec, type PipelineContext } from "../context.js";
import { poissonSample, shuffledBatches } from "../sampling.js";
import { openStage, type StageHooks } from "./common.js";
import { dpStageLoop } from "./loop.js";
import { membersDigest } from "./membership.js";

export const SFT_HANDLE = "sft";

/** What the stage releases: counts of planned steps, time, and where its checkpoint is (relative to the run directory). */
export interface SftResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  wallS: number;
}

/** Indices of batch t: Poisson-sampled in DP mode, else the t-th batch of seeded shuffled passes. */
export function batchIndices(dp: boolean, n: number, size: number, q: number, t: number, rng: Rng): number[] {
  if (dp) return poissonSample(n, q, rng.fork(`batch/${t}`));
  const perEpoch = Math.ceil(n / size);
  return shuffledBatches(n, size, rng.fork(`epoch/${Math.floor(t / perEpoch)}`))[t % perEpoch];
}

export async function runSft(ctx: PipelineContext, d1Rows: number[][], hooks?: StageHooks): Promise<SftResult> {
  const t0 = Date.now();
  const plan = ctx.plan.sft;
  if (!plan) throw new RangeError("runSft needs a plan with an SFT stage");
  const { sft } = effectiveStages(ctx.cfg);
  const lm = new LanguageModel(ctx.api, SFT_HANDLE);
  await lm.load(modelSpec(ctx.cfg, ctx.base, { lora: true }), adamw(sft.weightDecay));
  const rng = ctx.rng.fork("sft");
  const guard = await openStage(ctx, plan, SFT_HANDLE, rng);
  let ema = NaN;
  await dpStageLoop(ctx, {
    stage: "sft", label: "DP-SFT", handle: SFT_HANDLE, guard, groupSize: 1, groupsPerCommit: ctx.cfg.checkpointEvery,
    async runGroup(t, _n, check) {
      const idx = batchIndices(plan.dp, d1Rows.length, plan.batchSize, plan.q, t, rng);
      const r = await lm.trainLm(idx.map((i) => d1Rows[i]), ctx.base.padId, {
        dp: guard.dpSpec(t), lr: lrAt(sft.schedule, sft.lr, t, plan.sampledBatches), microBatchSize: sft.microBatchSize,
      });
      check(r, idx.length);
      if (idx.length > 0) ema = Number.isNaN(ema) ? r.loss : 0.9 * ema + 0.1 * r.loss;
      return {
        metrics: { examples: r.examples, members: membersDigest(idx), loss: r.loss, fractionClipped: r.fractionClipped, noiseStd: r.noiseStd, gradNormMedian: r.gradNormQuantiles[2] },
        info: `loss ${ema.toFixed(3)}`,
      };
    },
  }, hooks);
  await lm.unload();
  return { checkpoint: ctx.run.rel(ctx.run.checkpoint("sft", "last")), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps, wallS: (Date.now() - t0) / 1000 };
}
