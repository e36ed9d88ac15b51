/**
 * DP-PPO on D3 prompts with the KL penalty to the SFT model (Eq. 2). DP mode: each noisy step
 * uses a Poisson-sampled mini-batch (rate q = miniBatchSize/|D3|) whose rollouts come from the
 * current, already-private policy; T_PPO = K steps reuse that mini-batch (accounted as sigma /
 * sqrt(K)); fixed KL coefficient, no cross-example statistics. Non-private mode follows TRL:
 * rollout batches from shuffled passes, K epochs of shuffled mini-batches, whitening allowed.
 */
import { createKlController } from "../../rl/index.js";
import type { TrainStepReply } from "../../protocol/messages.js";
import { Policy, Reference } from "../../worker/roles.js";
import { effectiveStages } from "../config.js";
import { adamw, modelSpec, type PipelineContext } from "../context.js";
import { poissonSample, shuffledBatches } from "../sampling.js";
import { openStage, type StageHooks } from "./common.js";
import { dpStageLoop } from "./loop.js";
import { membersDigest } from "./membership.js";
import { rollout } from "./rollout.js";
import { PhaseClock, type PhaseRow } from "../timing.js";

export const POLICY = "policy";
export const REF = "ref";

/** What the stage releases: counts of planned steps, time, and its checkpoint (relative to the run directory). */
export interface PpoResult {
  checkpoint: string;
  batches: number;
  optimizerSteps: number;
  wallS: number;
  /** Where this invocation's time went (released like wallS; see timing.ts). */
  timing: PhaseRow[];
}

export async function runPpo(ctx: PipelineContext, d3Prompts: number[][], sftCheckpoint: string, hooks?: StageHooks): Promise<PpoResult> {
  const t0 = Date.now();
  const plan = ctx.plan.ppo;
  if (!plan) throw new RangeError("runPpo needs a plan with a PPO stage");
  const { ppo } = effectiveStages(ctx.cfg);
  const { run, base } = ctx;
  const dp = plan.dp;
  const sftCkpt = run.resolve(sftCheckpoint);
  const policy = new Policy(ctx.api, POLICY);
  const ref = new Reference(ctx.api, REF);
  const clock = new PhaseClock();
  await clock.time("load models", async () => {
    await policy.load(modelSpec(ctx.cfg, base, { lora: true, valueHead: true, initCheckpoint: sftCkpt }), adamw(0));
    await ref.load(modelSpec(ctx.cfg, base, { initCheckpoint: sftCkpt }));
  });
  const rng = ctx.rng.fork("ppo");
  const guard = await openStage(ctx, plan, POLICY, rng);
  const kl = createKlController(ppo, { dp });
  const G = plan.miniBatchesPerRollout;
  const K = plan.reuse;
  const N = d3Prompts.length;
  const perEpoch = Math.ceil(N / plan.rolloutBatch);
  const params = { clipRange: ppo.clipRange, clipRangeValue: ppo.clipRangeValue, vfCoef: ppo.vfCoef };
  let step = guard.done * K;
  await dpStageLoop(ctx, {
    stage: "ppo", label: dp ? "DP-PPO" : "PPO", handle: POLICY, guard, clock, groupSize: G, groupsPerCommit: Math.max(1, Math.round(ctx.cfg.checkpointEvery / G)),
    async runGroup(t, nb, check) {
      const round = Math.floor(t / G);
      // Which examples: DP, one independent Poisson sample per mini-batch; else one shuffled rollout batch.
      const groups: number[][] = dp
        ? Array.from({ length: nb }, (_, j) => poissonSample(N, plan.q, rng.fork(`batch/${t + j}`)))
        : [shuffledBatches(N, plan.rolloutBatch, rng.fork(`epoch/${Math.floor(round / perEpoch)}`))[round % perEpoch]];
      const flat = groups.flat();
      const [lo, hi] = ppo.responseTokens;
      const respLen = lo + rng.fork(`resp/${round}`).int(hi - lo + 1);
      const roll = await rollout({ policy, ref, reward: ctx.reward }, ppo, dp, flat.map((i) => d3Prompts[i]), base.padId, kl.value(), respLen, Number(rng.fork(`gen/${round}`).seedForChild() >> 12n), clock);
      const m = { loss: 0, clipfrac: 0, steps: 0, gradNormMedian: 0, fractionClipped: 0 };
      const train = async (rows: number[]) => {
        const r: TrainStepReply = await clock.time("train steps", () => policy.trainPpo(roll, rows, base.padId, params, { dp: guard.dpSpec(step), lr: ppo.lr, microBatchSize: ppo.microBatchSize }));
        check(r, rows.length);
        step++;
        m.loss += r.loss;
        m.clipfrac += r.metrics.clipfrac ?? 0;
        // Per-example gradient norms against C (private: they describe the sampled examples)
        m.gradNormMedian += r.gradNormQuantiles[2] ?? 0;
        m.fractionClipped += r.fractionClipped;
        m.steps++;
      };
      if (dp) {
        // Each sampled mini-batch takes its K noisy steps on its own rows.
        let off = 0;
        for (const g of groups) {
          const rows = g.map((_, k) => off + k);
          off += g.length;
          for (let k = 0; k < K; k++) await train(rows);
        }
      } else {
        for (let e = 0; e < K; e++) for (const mb of shuffledBatches(flat.length, ppo.miniBatchSize, rng.fork(`mb/${round}/${e}`))) await train(mb);
      }
      const n = roll.scores.length;
      const meanScore = n ? roll.scores.reduce((a, b) => a + b, 0) / n : 0;
      const meanKl = n ? roll.kl.reduce((a, b) => a + b, 0) / n : 0;
      kl.update(meanKl, n);
      return {
        metrics: {
          round, rollouts: n, members: groups.map(membersDigest), meanScore, meanKl, beta: kl.value(),
          loss: m.steps ? m.loss / m.steps : 0, clipfrac: m.steps ? m.clipfrac / m.steps : 0,
          gradNormMedian: m.steps ? m.gradNormMedian / m.steps : 0, fractionClipped: m.steps ? m.fractionClipped / m.steps : 0,
        },
        info: `reward ${meanScore.toFixed(2)} kl ${meanKl.toFixed(2)}`,
      };
    },
  }, hooks);
  await policy.unload();
  await ref.unload();
  return {
    checkpoint: run.rel(run.checkpoint("ppo", "last")), batches: plan.sampledBatches, optimizerSteps: plan.optimizerSteps,
    wallS: (Date.now() - t0) / 1000, timing: clock.rows(),
  };
}
