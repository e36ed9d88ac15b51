/**
 * DP-PPO on D3 prompts with the KL penalty to the SFT model (Eq. 2). DP mode: each noisy step
 * uses a Poisson-sampled mini-batch (rate q = miniBatchSize/|D3|) whose rollouts come from the
 * current, already-private policy; T_PPO = K steps reuse that mini-batch (accounted as sigma /
 * sqrt(K)); fixed KL coefficient, no cross-example statistics. Non-private mode follows TRL:
 * rollout batches from shuffled passes, K epochs of shuffled mini-batches, whitening allowed.
 */
import { createKlController } from "../../rl/index.js";
import { effectiveStages } from "../config.js";
import { adamw, modelSpec, type PipelineContext } from "../context.js";
import { poissonSample, shuffledBatches } from "../sampling.js";
import { commitStage, isCommitPoint, maybeInterrupt, openStage, stopIfRequested, type StageHooks } from "./common.js";
import { membersDigest } from "./membership.js";
import { ppoBatch, rollout } from "./rollout.js";

export const POLICY = "policy";
export const REF = "ref";

/** What the stage releases: counts of planned steps, time, and its checkpoint (relative to the run directory). */
export interface PpoResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  wallS: number;
}

export async function runPpo(ctx: PipelineContext, d3Prompts: number[][], sftCheckpoint: string, hooks?: StageHooks): Promise<PpoResult> {
  const t0 = Date.now();
  const plan = ctx.plan.ppo;
  const { ppo } = effectiveStages(ctx.cfg);
  const { api, run, base } = ctx;
  const sftCkpt = run.resolve(sftCheckpoint);
  const dp = plan.dp;
  await api.loadModel({ handle: POLICY, spec: modelSpec(ctx.cfg, base, { lora: true, valueHead: true, initCheckpoint: sftCkpt }), optimizer: adamw(0) });
  await api.loadModel({ handle: REF, spec: modelSpec(ctx.cfg, base, { initCheckpoint: sftCkpt }) });
  const rng = ctx.rng.fork("ppo");
  const guard = await openStage(ctx, plan, POLICY, rng);
  const kl = createKlController(ppo, { dp });
  const G = plan.miniBatchesPerRollout;
  const K = plan.reuse;
  const roundsPerCkpt = Math.max(1, Math.round(ctx.cfg.checkpointEvery / G));
  const N = d3Prompts.length;
  const perEpoch = Math.ceil(N / plan.rolloutBatch);
  let ran = 0, round = Math.floor(guard.done / G), step = guard.done * K;
  ctx.progress.start(dp ? "DP-PPO" : "PPO", plan.sampledBatches, guard.done);
  for (let t = guard.done; t < plan.sampledBatches; round++) {
    const nb = Math.min(G, plan.sampledBatches - t);
    // Which examples: DP, one independent Poisson sample per mini-batch; else one shuffled rollout batch.
    const groups: number[][] = dp
      ? Array.from({ length: nb }, (_, j) => poissonSample(N, plan.q, rng.fork(`batch/${t + j}`)))
      : [shuffledBatches(N, plan.rolloutBatch, rng.fork(`epoch/${Math.floor(round / perEpoch)}`))[round % perEpoch]];
    const flat = groups.flat();
    const [lo, hi] = ppo.responseTokens;
    const respLen = lo + rng.fork(`resp/${round}`).int(hi - lo + 1);
    const roll = await rollout(api, ppo, dp, POLICY, REF, flat.map((i) => d3Prompts[i]), base.padId, kl.value(), respLen, Number(rng.fork(`gen/${round}`).seedForChild() >> 12n));
    const metrics = { score: 0, kl: 0, loss: 0, clipfrac: 0, steps: 0 };
    const step1 = async (rows: number[]) => {
      const r = await api.trainStep({
        handle: POLICY, loss: "ppo", batch: ppoBatch(roll, rows, base.padId), dp: guard.dpSpec(step), lr: ppo.lr,
        lossParams: { clip_range: ppo.clipRange, clip_range_value: ppo.clipRangeValue, vf_coef: ppo.vfCoef }, microBatchSize: ppo.microBatchSize,
      });
      guard.checkReply(r, rows.length);
      step++;
      metrics.loss += r.loss;
      metrics.clipfrac += r.metrics.clipfrac ?? 0;
      metrics.steps++;
    };
    if (dp) {
      let off = 0;
      for (const g of groups) {
        guard.beforeBatch();
        const rows = g.map((_, k) => off + k);
        off += g.length;
        for (let k = 0; k < K; k++) await step1(rows);
        guard.afterBatch();
      }
    } else {
      for (let j = 0; j < nb; j++) guard.beforeBatch();
      for (let e = 0; e < K; e++) {
        for (const mb of shuffledBatches(flat.length, ppo.miniBatchSize, rng.fork(`mb/${round}/${e}`))) await step1(mb);
      }
      for (let j = 0; j < nb; j++) guard.afterBatch();
    }
    t += nb;
    ran += nb;
    const n = roll.scores.length;
    const meanScore = n ? roll.scores.reduce((a, b) => a + b, 0) / n : 0;
    const meanKl = n ? roll.kl.reduce((a, b) => a + b, 0) / n : 0;
    kl.update(meanKl, n);
    // Statistics of private rollouts: private/metrics.jsonl, and the console only with --verbose-private.
    run.metric("ppo", t, {
      round, rollouts: n, members: groups.map(membersDigest), meanScore, meanKl, beta: kl.value(),
      loss: metrics.steps ? metrics.loss / metrics.steps : 0, clipfrac: metrics.steps ? metrics.clipfrac / metrics.steps : 0,
    });
    ctx.progress.update(t, ctx.showPrivate ? `reward ${meanScore.toFixed(2)} kl ${meanKl.toFixed(2)} (private)` : "");
    if ((round + 1) % roundsPerCkpt === 0 || isCommitPoint(ctx, t, plan.sampledBatches, Infinity)) {
      await commitStage(ctx, guard, POLICY, "ppo", hooks);
      stopIfRequested(ctx, "ppo", t, plan.sampledBatches);
    }
    maybeInterrupt(hooks, "ppo", ran);
  }
  ctx.progress.stop();
  await api.unloadModel(POLICY);
  await api.unloadModel(REF);
  return { checkpoint: run.rel(run.checkpoint("ppo", "last")), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps, wallS: (Date.now() - t0) / 1000 };
}
