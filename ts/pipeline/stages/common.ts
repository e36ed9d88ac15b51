/** Opening, checkpointing and interrupting a DP training stage: shared by SFT and PPO. */
import { existsSync, renameSync, rmSync } from "node:fs";
import type { PipelineContext } from "../context.js";
import { DpStageGuard, readRunLedger, type NoiseSource } from "../dp-step.js";
import type { StagePlan } from "../plan.js";
import { InterruptedError } from "../run-errors.js";
import type { Rng } from "../../util/rng.js";

export { InterruptedError };

/**
 * Saves `handle` atomically to the stage's "last" checkpoint (the worker writes a temp dir first),
 * recording how many sampled batches it holds and the ledger line it follows.
 */
export async function saveLast(ctx: PipelineContext, handle: string, stage: string, batches: number, ledgerHead: string): Promise<string> {
  const dir = ctx.run.checkpoint(stage, "last");
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  await ctx.api.saveCheckpoint({ handle, dir: tmp, metadata: { stage, batches: String(batches), ledger_head: ledgerHead } });
  // The previous checkpoint stays (as last.old) until the new one is in place: a crash in between leaves one of them.
  const old = `${dir}.old`;
  rmSync(old, { recursive: true, force: true });
  if (existsSync(dir)) renameSync(dir, old);
  renameSync(tmp, dir);
  rmSync(old, { recursive: true, force: true });
  return dir;
}

export function lastCheckpoint(ctx: PipelineContext, stage: string): string | undefined {
  const dir = ctx.run.checkpoint(stage, "last");
  if (existsSync(dir)) return dir;
  return existsSync(`${dir}.old`) ? `${dir}.old` : undefined;
}

export interface StageHooks {
  /** Test hook: throw InterruptedError once this many batches of the named stage have run in this process. */
  stopAfter?: { stage: string; batches: number };
  /** Test hook: die right after the ledger record of this many batches of the stage, before its checkpoint. */
  crashAfterLedger?: { stage: string; batches: number };
}

export function maybeInterrupt(hooks: StageHooks | undefined, stage: string, ranHere: number): void {
  if (hooks?.stopAfter && hooks.stopAfter.stage === stage && ranHere >= hooks.stopAfter.batches) {
    throw new InterruptedError(`${stage}: interrupted after ${ranHere} batches (resume with the same command)`, 3);
  }
}

/**
 * A commit point of a stage: the ledger record first (fsynced), then the checkpoint that holds
 * the batches it covers. A stop requested by a signal also ends here, after the save.
 */
export async function commitStage(ctx: PipelineContext, guard: DpStageGuard, handle: string, stage: string, hooks?: StageHooks): Promise<void> {
  const head = guard.record();
  const c = hooks?.crashAfterLedger;
  if (c && c.stage === stage && guard.done >= c.batches) throw new InterruptedError(`${stage}: test crash after the ledger record of batch ${guard.done}`, 3);
  await saveLast(ctx, handle, stage, guard.done, head);
}

/** After a commit point: a requested stop ends the stage with what was just saved. */
export function stopIfRequested(ctx: PipelineContext, stage: string, done: number, total: number): void {
  if (ctx.stop.requested && done < total) {
    throw new InterruptedError(`${stage}: stopped by ${ctx.stop.signal ?? "request"} after batch ${done} of ${total}; the checkpoint and ledger are saved. Run the same command again to resume`);
  }
}

/**
 * Opens a DP stage: its guard (noise secure, or seeded from the run key in reproducible runs), and,
 * when the run directory holds progress, the model `handle` restored from the stage's last
 * checkpoint after checking it against the ledger.
 */
export async function openStage(ctx: PipelineContext, plan: StagePlan, handle: string, rng: Rng): Promise<DpStageGuard> {
  const stage = plan.stage;
  const noise: NoiseSource = ctx.secretMode === "secure" ? { mode: "secure" } : { mode: "seeded", seed: rng.fork("noise").seedForChild() };
  const guard = new DpStageGuard(plan, ctx.run, noise, ctx.cfg.privacy.accountant, ctx.plan);
  const resumeFrom = lastCheckpoint(ctx, stage);
  let inCheckpoint = 0;
  if (resumeFrom) {
    const info = await ctx.api.loadCheckpoint({ handle, dir: resumeFrom });
    inCheckpoint = Number(info.metadata.batches ?? 0);
    guard.verifyCheckpoint(inCheckpoint, info.metadata.ledger_head, readRunLedger(ctx.run).hashes);
  }
  if (guard.done > inCheckpoint) {
    ctx.progress.log(`${stage}: the ledger accounts batches ${inCheckpoint + 1}-${guard.done} that the last checkpoint does not hold (the process stopped between the two); they stay accounted and are not run again`);
  }
  if (guard.done > 0) ctx.progress.log(`${stage}: resuming after batch ${guard.done} of ${plan.sampledBatches}`);
  return guard;
}
