import type { Argv } from "yargs";
import { join } from "node:path";
import { defaultRunDir, runPipeline } from "../../pipeline/run.js";
import { consoleProgress } from "../../pipeline/progress.js";
import { CONFIG_DIR, commonOptions, loadWithOverrides } from "./pipeline-common.js";
import { printSummary } from "./run.js";
import { runControlOptions, withStopSignals } from "./run-control.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "demo",
    "The whole pipeline at epsilon = 4 on IMDb, about 5 minutes on 2 CPU cores (first-time pre-training included): configs/demo.yaml",
    (y) => y.options(commonOptions).options(runControlOptions).option("run-dir", { type: "string", describe: "run directory (default runs/demo-eps4-seed0)" }),
    async (args) => {
      const cfg = loadWithOverrides(join(CONFIG_DIR, "demo.yaml"), args.set as string[]);
      process.stderr.write("dpalign demo: IMDb positive continuations, DP-SFT + DP-PPO at epsilon 4 (configs/demo.yaml)\n");
      const s = await withStopSignals((stop) => runPipeline({
        cfg, runDir: (args.runDir as string | undefined) ?? defaultRunDir(cfg), dataDir: args.dataDir as string | undefined,
        cacheDir: args.cacheDir as string | undefined, progress: consoleProgress(), stop,
        showPrivate: args.verbosePrivate as boolean, forceUnlock: args.forceUnlock as boolean,
      }));
      printSummary(s);
    },
  );
}
