/**
 * DP-SFT on D1 (or non-private SFT on all of D): causal-LM loss on the review text, one noisy
 * step per Poisson-sampled batch with the planned sigma; checkpoint and ledger entry every
 * `checkpointEvery` batches, so an interrupted stage resumes where its last checkpoint left it.
 */
import { SeededRng } from "../../util/rng.js";
import { effectiveStages } from "../config.js";
import { adamw, lrAt, modelSpec, type PipelineContext } from "../context.js";
import { poissonSample, shuffledBatches } from "../sampling.js";
import { lmBatch } from "../tokens.js";
import { maybeInterrupt, openStage, saveLast, type StageHooks } from "./common.js";

export const SFT_HANDLE = "sft";

export interface SftResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  meanExamples: number;
  lossEma: number;
  wallS: number;
}

/** Indices of batch t: Poisson-sampled in DP mode, else the t-th batch of seeded shuffled passes. */
export function batchIndices(dp: boolean, n: number, size: number, q: number, t: number, rng: SeededRng): number[] {
  if (dp) return poissonSample(n, q, rng.fork(`batch/${t}`));
  const perEpoch = Math.ceil(n / size);
  return shuffledBatches(n, size, rng.fork(`epoch/${Math.floor(t / perEpoch)}`))[t % perEpoch];
}

export async function runSft(ctx: PipelineContext, d1Rows: number[][], hooks?: StageHooks): Promise<SftResult> {
  const t0 = Date.now();
  const plan = ctx.plan.sft;
  const { sft } = effectiveStages(ctx.cfg);
  const { api, run } = ctx;
  await api.loadModel({ handle: SFT_HANDLE, spec: modelSpec(ctx.cfg, ctx.base, { lora: true }), optimizer: adamw(sft.weightDecay) });
  const rng = ctx.rng.fork("sft");
  const guard = await openStage(ctx, plan, SFT_HANDLE, rng);
  const every = ctx.cfg.checkpointEvery;
  let ema = NaN;
  let examples = 0;
  let ran = 0;
  ctx.progress.start("DP-SFT", plan.sampledBatches, guard.done);
  for (let t = guard.done; t < plan.sampledBatches; t++) {
    guard.beforeBatch();
    const idx = batchIndices(plan.dp, d1Rows.length, plan.batchSize, plan.q, t, rng);
    const r = await api.trainStep({
      handle: SFT_HANDLE, loss: "causal_lm", batch: lmBatch(idx.map((i) => d1Rows[i]), ctx.base.padId),
      dp: guard.dpSpec(t), lr: lrAt(sft.schedule, sft.lr, t, plan.sampledBatches), microBatchSize: sft.microBatchSize,
    });
    guard.checkReply(r, idx.length);
    guard.afterBatch();
    ran++;
    examples += idx.length;
    if (idx.length > 0) ema = Number.isNaN(ema) ? r.loss : 0.9 * ema + 0.1 * r.loss;
    run.metric("sft", t, { examples: r.examples, loss: r.loss, fractionClipped: r.fractionClipped, noiseStd: r.noiseStd, gradNormMedian: r.gradNormQuantiles[2] });
    ctx.progress.update(t + 1, `loss ${ema.toFixed(3)}`);
    if ((t + 1) % every === 0 || t + 1 === plan.sampledBatches) {
      await saveLast(ctx, SFT_HANDLE, "sft", t + 1);
      guard.commit();
    }
    maybeInterrupt(hooks, "sft", ran);
  }
  ctx.progress.stop();
  await api.unloadModel(SFT_HANDLE);
  return {
    checkpoint: ctx.run.checkpoint("sft", "last"), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps,
    meanExamples: ran ? examples / ran : 0, lossEma: ema, wallS: (Date.now() - t0) / 1000,
  };
}
