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
import { heldOutLm, type HeldOutLm } from "./lm-eval.js";
import { cleanReview } from "../data/jsonl.js";
import { tokenizeRows } from "../tokens.js";

export const SFT_HANDLE = "sft";

/** What the stage releases: counts of planned steps, time, and where its checkpoint is (relative to the run directory). */
export interface SftResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  wallS: number;
  /**
   * The causal-LM loss on public held-out reviews of the private distribution (data.lmHeldOut,
   * IMDb test reviews no other role uses), cut like D1 to sft.maxTokens: of the pretrained model
   * before SFT and of the SFT model after it. Public text scored by a DP model: releasable.
   */
  heldOut?: { before: HeldOutLm; after: HeldOutLm };
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
  const held = ctx.roles?.lmHeldOut ?? []; // stage tests run without data roles
  const heldRows = held.length ? await tokenizeRows(lm, held.map((r) => cleanReview(r.text)), sft.maxTokens) : [];
  // Measured before a resumed stage restores its checkpoint: LoRA starts at zero, so this is the pretrained model.
  const before = heldRows.length ? await heldOutLm(ctx.api, SFT_HANDLE, heldRows, ctx.base.padId) : undefined;
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
  const after = before ? await heldOutLm(ctx.api, SFT_HANDLE, heldRows, ctx.base.padId) : undefined;
  await lm.unload();
  if (before && after) ctx.progress.log(`DP-SFT: ${describeSftHeldOut({ before, after })}`);
  return {
    checkpoint: ctx.run.rel(ctx.run.checkpoint("sft", "last")), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps, wallS: (Date.now() - t0) / 1000,
    ...(before && after ? { heldOut: { before, after } } : {}),
  };
}

/** The held-out figure as the run output and report.md give it. */
export function describeSftHeldOut(h: NonNullable<SftResult["heldOut"]>): string {
  return `held-out LM loss on ${h.before.texts} public test reviews (never trained on) ${h.before.loss.toFixed(3)} before -> ${h.after.loss.toFixed(3)} after SFT (perplexity ${h.before.perplexity.toFixed(1)} -> ${h.after.perplexity.toFixed(1)})`;
}
