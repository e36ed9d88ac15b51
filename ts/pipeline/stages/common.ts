/** Checkpointing and interruption helpers shared by the training stages. */
import { existsSync, renameSync, rmSync } from "node:fs";
import type { PipelineContext } from "../context.js";
import { DpStageGuard } from "../dp-step.js";
import type { StagePlan } from "../plan.js";
import { DpalignError } from "../../util/errors.js";
import type { SeededRng } from "../../util/rng.js";

/** Raised by the test hook `stopAfter` to simulate a run killed in the middle of a stage. */
export class InterruptedError extends DpalignError {
  constructor(stage: string, batches: number) {
    super("INTERRUPTED", `${stage}: interrupted after ${batches} batches (resume with the same command)`);
  }
}

/** Saves `handle` atomically to the stage's "last" checkpoint (the worker writes a temp dir first). */
export async function saveLast(ctx: PipelineContext, handle: string, stage: string, batches: number): Promise<string> {
  const dir = ctx.run.checkpoint(stage, "last");
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  await ctx.api.saveCheckpoint({ handle, dir: tmp, metadata: { stage, batches: String(batches) } });
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export function lastCheckpoint(ctx: PipelineContext, stage: string): string | undefined {
  const dir = ctx.run.checkpoint(stage, "last");
  return existsSync(dir) ? dir : undefined;
}

export interface StageHooks {
  /** Test hook: throw InterruptedError once this many batches of the named stage have run in this process. */
  stopAfter?: { stage: string; batches: number };
}

export function maybeInterrupt(hooks: StageHooks | undefined, stage: string, ranHere: number): void {
  if (hooks?.stopAfter && hooks.stopAfter.stage === stage && ranHere >= hooks.stopAfter.batches) {
    throw new InterruptedError(stage, ranHere);
  }
}

/**
 * Opens a DP stage: its guard (noise seed from the stage's stream), and, when the run directory
 * records executed batches, the model `handle` restored from the stage's last checkpoint.
 */
export async function openStage(ctx: PipelineContext, plan: StagePlan, handle: string, rng: SeededRng): Promise<DpStageGuard> {
  const stage = plan.stage;
  const guard = new DpStageGuard(plan, ctx.run, ctx.cfg.privacy.secureNoise, rng.fork("noise").seedForChild(), ctx.cfg.privacy.accountant, ctx.plan);
  const resumeFrom = lastCheckpoint(ctx, stage);
  if (!resumeFrom && guard.done > 0) {
    throw new DpalignError("RESUME_MISMATCH", `${stage}: the ledger records ${guard.done} batches but the stage's checkpoint is missing; delete the run directory and start again`);
  }
  if (resumeFrom) {
    const info = await ctx.api.loadCheckpoint({ handle, dir: resumeFrom });
    guard.reconcile(Number(info.metadata.batches ?? 0));
    ctx.progress.log(`${stage}: resuming after batch ${guard.done} of ${plan.sampledBatches}`);
  }
  return guard;
}
