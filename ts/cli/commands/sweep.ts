import type { Argv } from "yargs";
import { withWorkers, workersOption } from "./pipeline-common.js";
import { join } from "node:path";
import { runSweep, epsLabel, sweepColumns, sweepRunConfig } from "../../pipeline/sweep.js";
import { planRun, formatPlan } from "../../pipeline/plan.js";
import { accountantCalibrator } from "../../pipeline/privacy.js";
import { consoleProgress } from "../../pipeline/progress.js";
import { projectRoot } from "../../util/python.js";
import { commonOptions, loadWithOverrides, workerOptions } from "./pipeline-common.js";
import { DEFAULT_CACHE_DIR } from "../../pipeline/run.js";
import { openRemoteWorkers, type RemoteWorkerFlags } from "../../worker/connect.js";
import { runControlOptions, withStopSignals } from "./run-control.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "sweep <config>",
    "Run an epsilon grid (sweep.epsilons, default inf 8 4 2 1) times seeds (sweep.seeds, default 0 1 2); complete runs are skipped, interrupted ones resume; writes a Table-1 layout table",
    (y) =>
      y
        .positional("config", { type: "string", demandOption: true })
        .options(commonOptions)
        .options(workersOption)
        .options(runControlOptions)
        .options(workerOptions)
        .option("root", { type: "string", describe: "sweep directory (default runs/sweep-<name>)" })
        .option("dry-run", { type: "boolean", default: false, describe: "print the plan of every grid point" }),
    async (args) => {
      const cfg = loadWithOverrides(args.config as string, withWorkers(args.set as string[], args.workers));
      if (args.dryRun) {
        for (const { eps, dpSettings } of sweepColumns(cfg)) {
          const label = `${epsLabel(eps)}${dpSettings ? " (the DP settings, no nonPrivate recipe)" : ""}`;
          process.stdout.write(`# epsilon ${label}\n${formatPlan(planRun(sweepRunConfig(cfg, eps, cfg.seed, dpSettings), accountantCalibrator))}\n\n`);
        }
        return;
      }
      const root = (args.root as string | undefined) ?? join(projectRoot, "runs", `sweep-${cfg.name}`);
      const remote = await openRemoteWorkers(args as RemoteWorkerFlags, [
        { dir: root, what: "sweep directory" }, { dir: (args.cacheDir as string | undefined) ?? DEFAULT_CACHE_DIR, what: "model cache (--cache-dir)" },
      ], cfg.workers);
      if (remote) process.stderr.write(`${remote.description}\n`);
      let markdown: string;
      try {
        ({ markdown } = await withStopSignals((stop) => runSweep({
          cfg, root, dataDir: args.dataDir as string | undefined, cacheDir: args.cacheDir as string | undefined, progress: consoleProgress(), api: remote?.api,
          stop, showPrivate: args.verbosePrivate as boolean, forceUnlock: args.forceUnlock as boolean, tensorboard: args.tensorboard as string | undefined,
        })));
      } finally {
        await remote?.close();
      }
      process.stdout.write(`\n${markdown}\nwritten to ${root}/table.md and table.json\n`);
    },
  );
}
