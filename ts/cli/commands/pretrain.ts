import type { Argv } from "yargs";
import { join } from "node:path";
import { WorkerClient } from "../../transport/client.js";
import { WorkerApi } from "../../worker/api.js";
import { assignPublicRoles } from "../../pipeline/data/roles.js";
import { DEFAULT_CACHE_DIR, loadData } from "../../pipeline/run.js";
import { describeHeldOut, pretrain } from "../../pipeline/stages/pretrain.js";
import { consoleProgress } from "../../pipeline/progress.js";
import { CONFIG_DIR, commonOptions, loadWithOverrides } from "./pipeline-common.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "pretrain [config]",
    "Pretrain the built-in tiny model and its tokenizer on the public corpus (IMDb unsup), non-privately; cached by a hash of config and data",
    (y) => y.positional("config", { type: "string", describe: "config file (default configs/demo.yaml)" }).options(commonOptions),
    async (args) => {
      const cfg = loadWithOverrides((args.config as string | undefined) ?? join(CONFIG_DIR, "demo.yaml"), args.set as string[]);
      const { data } = await loadData(cfg, args.dataDir as string | undefined);
      const roles = assignPublicRoles(data, cfg.data);
      const client = await WorkerClient.spawn();
      try {
        const r = await pretrain(new WorkerApi(client), cfg, roles.publicCorpus, (args.cacheDir as string | undefined) ?? DEFAULT_CACHE_DIR, consoleProgress(), roles.pretrainHeldOut);
        process.stdout.write(`${r.reused ? "cached" : "trained"}: ${r.checkpoint} (loss ${r.finalLoss.toFixed(3)}, ${r.wallS.toFixed(0)} s${r.tokensSeen ? `, ${r.tokensSeen} tokens seen` : ""})\n`);
        if (r.heldOut) process.stdout.write(`${describeHeldOut(r.heldOut)}\n`);
      } finally {
        await client.close();
      }
    },
  );
}
