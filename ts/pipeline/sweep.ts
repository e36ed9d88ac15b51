/**
 * `dpalign sweep`: an epsilon grid times seeds, each a run directory under the sweep root;
 * complete runs are skipped, interrupted ones resume. One worker and one data load serve all runs.
 * The result is a table in the layout of the paper's Table 1 (Markdown and JSON).
 */
import { join } from "node:path";
import { spawnPipelineWorkers, type Workers } from "../worker/group.js";
import { WorkerApi } from "../worker/api.js";
import type { Config } from "./config.js";
import { isComplete, loadData, runPipeline, type RunOptions } from "./run.js";
import { RunDir } from "./run-dir.js";
import { RunLock } from "./lock.js";
import { buildTable, renderTable, type SweepCell } from "./table.js";
import { silentProgress, type Progress } from "./progress.js";
import { plotQuietly } from "./plot.js";

export interface SweepOptions {
  cfg: Config;
  root: string;
  dataDir?: string;
  cacheDir?: string;
  progress?: Progress;
  api?: WorkerApi;
  hooks?: RunOptions["hooks"];
  showPrivate?: boolean;
  stop?: RunOptions["stop"];
  forceUnlock?: boolean;
  /** --tensorboard DIR: each run writes under DIR/<its directory's name>/. */
  tensorboard?: string;
}

export const epsLabel = (e: number) => (Number.isFinite(e) ? String(e) : "inf");

export function sweepRunDir(root: string, eps: number, seed: number, dpSettings = false): string {
  return join(root, `eps${epsLabel(eps)}${dpSettings ? "-dpsettings" : ""}-seed${seed}`);
}

/** The sweep's columns: each epsilon, and after eps = inf its like-for-like twin (table.ts). */
export function sweepColumns(cfg: Config): { eps: number; dpSettings: boolean }[] {
  return cfg.sweep.epsilons.flatMap((eps) => [
    ...(eps !== Infinity || cfg.sweep.nonPrivateRecipe ? [{ eps, dpSettings: false }] : []),
    ...(eps === Infinity && cfg.sweep.infWithDpSettings ? [{ eps, dpSettings: true }] : []),
  ]);
}

/**
 * One run's config: the sweep's, at this seed and epsilon. The like-for-like inf run drops the
 * `nonPrivate` recipe and splits D into D1 / D3 as the DP runs do, so it sees the same data per
 * stage and runs the same number of steps.
 */
export function sweepRunConfig(cfg: Config, eps: number, seed: number, dpSettings: boolean): Config {
  return {
    ...cfg, seed, name: `${cfg.name}-eps${epsLabel(eps)}${dpSettings ? "-dpsettings" : ""}-seed${seed}`, privacy: { ...cfg.privacy, epsilon: eps },
    ...(dpSettings ? { nonPrivate: { sft: {}, rm: {}, ppo: {}, disjointStages: true } } : {}),
  };
}

export async function runSweep(o: SweepOptions): Promise<{ cells: SweepCell[]; markdown: string }> {
  const root = new RunDir(o.root);
  const lock = RunLock.acquire(root.dir, { forceUnlock: o.forceUnlock });
  try {
    return await sweepLocked(o, root);
  } finally {
    lock.release();
  }
}

async function sweepLocked(o: SweepOptions, root: RunDir): Promise<{ cells: SweepCell[]; markdown: string }> {
  const progress = o.progress ?? silentProgress;
  const { cfg } = o;
  const data = await loadData(cfg, o.dataDir);
  let client: Workers | undefined;
  const api = o.api ?? new WorkerApi((client = await spawnPipelineWorkers(cfg.workers, cfg.device)));
  const cells: SweepCell[] = [];
  root.writeJson("sweep-config.json", cfg);
  try {
    for (const seed of cfg.sweep.seeds) {
      for (const { eps, dpSettings } of sweepColumns(cfg)) {
        const dir = sweepRunDir(o.root, eps, seed, dpSettings);
        const runCfg = sweepRunConfig(cfg, eps, seed, dpSettings);
        const what = `eps ${epsLabel(eps)}${dpSettings ? " (DP settings)" : ""} seed ${seed}`;
        if (isComplete(dir)) {
          progress.log(`sweep: ${what} already complete, skipped`);
        } else {
          progress.log(`sweep: ${what} -> ${dir}`);
          if (client?.state === "crashed") {
            // A worker that died between runs loses nothing: every run resumes from its own checkpoints.
            progress.log("sweep: the worker had crashed; starting a fresh one");
            await client.restart();
          }
          await runPipeline({
            cfg: runCfg, runDir: dir, dataDir: o.dataDir, cacheDir: o.cacheDir, progress, api, data, hooks: o.hooks,
            showPrivate: o.showPrivate, stop: o.stop, forceUnlock: o.forceUnlock, tensorboard: o.tensorboard,
          });
        }
        const s = new RunDir(dir).readJson<{ evals: { model: string; meanReward: number; rouge?: { rougeL: number } }[]; rm?: { heldOutAccuracy: number }; wallS: number }>("summary.json")!;
        const get = (m: string) => s.evals.find((e) => e.model === m)?.meanReward ?? NaN;
        const rl = (m: string) => s.evals.find((e) => e.model === m)?.rouge?.rougeL ?? NaN;
        cells.push({
          epsilon: eps, seed, pretrained: get("pretrained"), sft: get("sft"), aligned: get("aligned"), ...(dpSettings ? { dpSettings } : {}),
          ...(s.rm ? { rmAccuracy: s.rm.heldOutAccuracy } : {}),
          ...(s.evals.some((e) => e.rouge) ? { rougeL: { pretrained: rl("pretrained"), sft: rl("sft"), aligned: rl("aligned") } } : {}),
          wallS: s.wallS,
        });
        const table = buildTable(cells);
        root.writeJson("table.json", table);
        root.appendJsonl("cells.jsonl", cells.at(-1));
      }
    }
  } finally {
    await client?.close();
  }
  const table = buildTable(cells);
  const markdown = renderTable(table, cfg.name);
  root.writeJson("table.json", table);
  const { writeFileSync } = await import("node:fs");
  writeFileSync(root.path("table.md"), markdown);
  await plotQuietly(root.dir, (l) => progress.log(l), "sweep"); // plots/*.svg from table.json, linked from table.md
  return { cells, markdown };
}
