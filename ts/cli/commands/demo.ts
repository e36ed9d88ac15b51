import type { Argv } from "yargs";
import { withWorkers, workersOption } from "./pipeline-common.js";
import { join } from "node:path";
import { CONFIG_DIR, commonOptions, loadWithOverrides, workerOptions } from "./pipeline-common.js";
import { runFromArgs } from "./run.js";
import { runControlOptions } from "./run-control.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "demo",
    "The whole pipeline at epsilon = 4 on IMDb, about 5 minutes on 2 CPU cores (first-time pre-training included): configs/demo.yaml",
    (y) =>
      y
        .options(commonOptions)
        .options(workersOption)
        .options(runControlOptions)
        .options(workerOptions)
        .option("scenario", {
          choices: ["classifier", "rlhf"] as const, default: "classifier" as const,
          describe: "classifier: PPO against the public sentiment classifier (configs/demo.yaml); rlhf: a DP reward model from gold-labelled pairs, then PPO against it (configs/rlhf-demo.yaml)",
        })
        .option("run-dir", { type: "string", describe: "run directory (default runs/<demo name>-eps4-seed0)" }),
    async (args) => {
      const rlhf = args.scenario === "rlhf";
      const file = rlhf ? "rlhf-demo.yaml" : "demo.yaml";
      const cfg = loadWithOverrides(join(CONFIG_DIR, file), withWorkers(args.set as string[], args.workers));
      process.stderr.write(
        rlhf
          ? `dpalign demo: RLHF on IMDb, DP-SFT + DP reward model + DP-PPO at epsilon 4 (configs/${file})\n`
          : `dpalign demo: IMDb positive continuations, DP-SFT + DP-PPO at epsilon 4 (configs/${file})\n`,
      );
      await runFromArgs(cfg, args);
    },
  );
}
