/**
 * What the pipeline commands (run, demo, sweep) share beyond config loading: the options that
 * control a run's privacy display and lock, and signal handling. SIGINT / SIGTERM ask the run to
 * stop at the next batch boundary after saving its checkpoint and ledger; a second signal exits
 * at once (the lock and the worker's socket file are removed by exit handlers).
 */
import type { StopRequest } from "../../pipeline/context.js";

export const runControlOptions = {
  "verbose-private": {
    type: "boolean", default: false,
    describe: "also print statistics of private batches (loss, reward, KL) while training; such output is private: do not publish it",
  },
  tensorboard: {
    type: "string",
    describe: "write TensorBoard event files of the released metrics (evaluation reward, epsilon spent per stage, wall time) under DIR/<run name>/; private-batch statistics only with --verbose-private",
  },
  "force-unlock": { type: "boolean", default: false, describe: "break a stale lock left on the run directory by a dpalign process that is no longer running" },
} as const;

/** Runs `body` with SIGINT/SIGTERM turned into a stop request; restores the default handlers after. */
export async function withStopSignals<T>(body: (stop: StopRequest) => Promise<T>): Promise<T> {
  const stop: StopRequest = { requested: false };
  const handler = (signal: NodeJS.Signals) => {
    if (stop.requested) {
      process.stderr.write(`\ndpalign: ${signal} again: stopping now; work since the last checkpoint is lost, rerun the same command to resume\n`);
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    stop.requested = true;
    stop.signal = signal;
    process.stderr.write(`\ndpalign: ${signal} received: finishing the current batch, saving the checkpoint and ledger, then stopping (send it again to stop at once)\n`);
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  try {
    return await body(stop);
  } finally {
    process.removeListener("SIGINT", handler);
    process.removeListener("SIGTERM", handler);
  }
}
