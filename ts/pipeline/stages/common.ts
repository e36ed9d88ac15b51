/** Checkpointing and interruption helpers shared by the training stages. */
import { existsSync, renameSync, rmSync } from "node:fs";
import type { PipelineContext } from "../context.js";
import { DpalignError } from "../../util/errors.js";

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
