import { dirname, resolve } from "node:path";
import type { Argv } from "yargs";
import { withWorkers, workersOption } from "./pipeline-common.js";
import { planRun, formatPlan } from "../../pipeline/plan.js";
import { accountantCalibrator } from "../../pipeline/privacy.js";
import { dataSizesForPlan, DEFAULT_CACHE_DIR, defaultRunDir, runPipeline, type RunSummary } from "../../pipeline/run.js";
import { consoleProgress } from "../../pipeline/progress.js";
import { describeReward } from "../../pipeline/stages/reward.js";
import { commonOptions, loadWithOverrides, workerOptions } from "./pipeline-common.js";
import { openRemoteWorkers, type RemoteWorkerFlags, type SharedDir } from "../../worker/connect.js";
import { runControlOptions, withStopSignals } from "./run-control.js";
import type { Config } from "../../pipeline/config.js";

export function printSummary(s: RunSummary): void {
  const out = process.stdout;
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : "-");
  if (s.privacy.notPrivateReason && s.plan.dp) out.write(`\nNOT DIFFERENTIALLY PRIVATE (epsilon = inf): ${s.privacy.notPrivateReason}\n`);
  out.write(`\nrun directory: ${s.runDir}\n`);
  if (s.reward) out.write(`${describeReward(s.reward)}\n`);
  if (s.rm) out.write(`DP reward model accuracy (public held-out pairs${s.reward ? ", gold labeller" : ""}): ${(100 * s.rm.heldOutAccuracy).toFixed(1)}% on ${s.rm.heldOutPairs}, loss ${f(s.rm.heldOutLoss)}\n`);
  if (s.evals.length) {
    out.write(`mean ${s.rm ? "gold " : ""}reward on held-out prompts (95% CI over prompts):\n`);
    for (const e of s.evals) out.write(`  ${e.model.padEnd(11)} ${f(e.meanReward)} +- ${f(e.ci95)}${e.evalRm ? `   (evaluation RM: ${f(e.evalRm.meanReward)} +- ${f(e.evalRm.ci95)})` : ""}\n`);
  }
  for (const st of s.privacy.stages) out.write(`privacy ${st.stage}: epsilon ${f(st.epsilon)} (q ${st.q.toPrecision(3)}, sigma ${f(st.sigma)}, ${st.batchesExecuted} batches x ${st.reuse})\n`);
  out.write(`composed: epsilon ${f(s.privacy.composed.epsilon)}, delta ${s.privacy.composed.delta.toExponential(2)} (${s.privacy.composed.rule})\n`);
  out.write(`wall time ${s.wallS.toFixed(0)} s; report: ${s.runDir}/report.md\n`);
}

/** What a remote worker must see at the same paths for one run: where the run directory goes, and the model cache. */
export function runSharedDirs(runDir: string, cacheDir: string | undefined): SharedDir[] {
  return [{ dir: dirname(resolve(runDir)), what: "directory of the run directory" }, { dir: cacheDir ?? DEFAULT_CACHE_DIR, what: "model cache (--cache-dir)" }];
}

export function register(cli: Argv): Argv {
  return cli.command(
    "run <config>",
    "Run the whole pipeline (pretrain, public reward, DP-SFT, DP-PPO, evaluation) from a YAML or JSON config",
    (y) =>
      y
        .positional("config", { type: "string", demandOption: true, describe: "config file (configs/*.yaml)" })
        .options(commonOptions)
        .options(workersOption)
        .options(runControlOptions)
        .options(workerOptions)
        .option("dry-run", { type: "boolean", default: false, describe: "validate and print the plan (sigma per stage, steps) without training" })
        .option("run-dir", { type: "string", describe: "run directory (default runs/<name>-eps<eps>-seed<seed>); an existing one is resumed" }),
    async (args) => {
      const cfg = loadWithOverrides(args.config as string, withWorkers(args.set as string[], args.workers));
      if (args.dryRun) {
        process.stdout.write(formatPlan(planRun(cfg, accountantCalibrator, await dataSizesForPlan(cfg, args.dataDir as string | undefined))) + "\n");
        return;
      }
      await runFromArgs(cfg, args);
    },
  );
}

/**
 * One pipeline run as `run` and `demo` start it: the run directory (--run-dir or the default),
 * workers started by hand where --worker-endpoint names them, stop signals, the summary.
 */
export async function runFromArgs(cfg: Config, args: Record<string, unknown>): Promise<void> {
  const runDir = (args.runDir as string | undefined) ?? defaultRunDir(cfg);
  const remote = await openRemoteWorkers(args as RemoteWorkerFlags, runSharedDirs(runDir, args.cacheDir as string | undefined), cfg.workers);
  if (remote) process.stderr.write(`${remote.description}\n`);
  try {
    const s = await withStopSignals((stop) => runPipeline({
      cfg, runDir, dataDir: args.dataDir as string | undefined, api: remote?.api,
      cacheDir: args.cacheDir as string | undefined, progress: consoleProgress(), stop,
      showPrivate: args.verbosePrivate as boolean, forceUnlock: args.forceUnlock as boolean, tensorboard: args.tensorboard as string | undefined,
    }));
    printSummary(s);
  } finally {
    await remote?.close();
  }
}
