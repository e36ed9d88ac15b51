/**
 * The loop every DP training stage runs (SFT, PPO, and any later one): before each group of
 * sampled batches the guard checks the plan and the budget; the stage's unit trains them, and
 * each worker reply is checked against the plan as it arrives; then the batches count as executed,
 * private statistics go to private/metrics.jsonl, the console shows counts only (unless
 * --verbose-private), and at commit points the ledger record and then the checkpoint are written.
 * A stage supplies only what differs: how a group of batches is trained.
 */
import type { TrainStepReply } from "../../protocol/messages.js";
import type { PipelineContext } from "../context.js";
import type { DpStageGuard } from "../dp-step.js";
import type { StageId } from "../plan.js";
import type { PhaseClock } from "../timing.js";
import { commitStage, maybeInterrupt, stopIfRequested, type StageHooks } from "./common.js";

/** What one group of sampled batches produced. */
export interface GroupResult {
  /** Statistics of the private batches: written to private/metrics.jsonl only. */
  metrics: Record<string, unknown>;
  /** A short private summary for --verbose-private. */
  info?: string;
}

export interface StageLoop {
  stage: StageId;
  /** Progress label. */
  label: string;
  /** Worker handle of the model that is checkpointed. */
  handle: string;
  guard: DpStageGuard;
  /** Sampled batches trained together (PPO: the mini-batches of one rollout round; SFT: 1). */
  groupSize: number;
  /** Groups between commit points. */
  groupsPerCommit: number;
  /**
   * Trains sampled batches [t, t + n); calls `check(reply, sampled)` after every train step with
   * the number of examples that were sampled for it.
   */
  runGroup(t: number, n: number, check: (reply: TrainStepReply, sampled: number) => void): Promise<GroupResult>;
  /** Times the commit points as "ledger + checkpoint" (the stage times its own phases). */
  clock?: PhaseClock;
}

/** Runs the stage from its resume point to the planned number of sampled batches. */
export async function dpStageLoop(ctx: PipelineContext, loop: StageLoop, hooks?: StageHooks): Promise<void> {
  const { guard } = loop;
  const total = guard.plan.sampledBatches;
  const check = (r: TrainStepReply, sampled: number) => guard.checkReply(r, sampled);
  let ran = 0;
  ctx.progress.start(loop.label, total, guard.done);
  for (let t = guard.done; t < total; ) {
    const n = Math.min(loop.groupSize, total - t);
    const group = Math.floor(t / loop.groupSize);
    guard.beforeBatches(n);
    const res = await loop.runGroup(t, n, check);
    guard.afterBatches(n);
    ctx.run.metric(loop.stage, t, res.metrics);
    ctx.tensorboard?.privateMetrics(loop.stage, t + n, res.metrics); // writes only with --verbose-private
    t += n;
    ran += n;
    ctx.progress.update(t, ctx.showPrivate && res.info ? `${res.info} (private)` : "");
    if ((group + 1) % loop.groupsPerCommit === 0 || t >= total || ctx.stop.requested) {
      const commit = () => commitStage(ctx, guard, loop.handle, loop.stage, hooks);
      await (loop.clock ? loop.clock.time("ledger + checkpoint", commit) : commit());
      ctx.tensorboard?.commit(guard.plan, guard.accounted);
      stopIfRequested(ctx, loop.stage, t, total);
    }
    maybeInterrupt(hooks, loop.stage, ran);
  }
  ctx.progress.stop();
}
