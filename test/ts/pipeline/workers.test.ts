/**
 * A whole tiny run with `workers: 2` against the same run with one worker (privacy.reproducible:
 * seeded sampling and noise, so both draw the same batches and the same noise): the DP-SFT model
 * comes out the same (float32 sums taken in another order, nothing more), also when the two-worker
 * run is interrupted and resumed, and the ledger and the privacy report are identical: the
 * mechanism the ledger accounts is the one both ran.
 */
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { readSafetensors } from "../../../ts/audit/safetensors.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { runPipeline } from "../../../ts/pipeline/run.js";
import { silentProgress } from "../../../ts/pipeline/progress.js";
import { InterruptedError } from "../../../ts/pipeline/stages/common.js";
import { applyOverrides, withWorkers } from "../../../ts/cli/commands/pipeline-common.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

describe("a run with two workers", () => {
  it("trains the same DP-SFT model and writes the same ledger and privacy report as one worker", async () => {
    const dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
    const cacheDir = tmpDir("dpalign-cache-");
    const one = parseConfig({ ...TINY, privacy: { ...TINY.privacy, reproducible: true } });
    const two = applyOverrides(one, ["workers=2"], "test");
    expect([one.workers, two.workers]).toEqual([1, 2]);
    const dirs = [join(tmpDir(), "one"), join(tmpDir(), "two")];
    const runs = [];
    const logs: string[][] = [[], []];
    const progress = (i: number) => ({ ...silentProgress, log: (l: string) => logs[i].push(l) });
    runs.push(await runPipeline({ cfg: one, runDir: dirs[0], dataDir, cacheDir, progress: progress(0) }));
    // the two-worker run is interrupted in DP-SFT and resumed from its checkpoint, by a group again
    await expect(runPipeline({ cfg: two, runDir: dirs[1], dataDir, cacheDir, progress: progress(1), hooks: { stopAfter: { stage: "sft", batches: 2 } } }))
      .rejects.toBeInstanceOf(InterruptedError);
    runs.push(await runPipeline({ cfg: two, runDir: dirs[1], dataDir, cacheDir, progress: progress(1) }));
    expect(logs[1].some((l) => /^workers: 2 in one process group \(gloo\)/.test(l))).toBe(true);
    expect(logs[0].some((l) => /^workers:/.test(l))).toBe(false);

    expect(runs[1].privacy).toEqual(runs[0].privacy);
    const ledger = (d: string) => readFileSync(join(d, "ledger.jsonl"), "utf8").trim().split("\n").map((l) => {
      const { ts: _t, time: _u, prev: _p, hash: _h, ...rest } = JSON.parse(l) as Record<string, unknown>;
      return rest;
    });
    expect(ledger(dirs[1])).toEqual(ledger(dirs[0]));
    expect(ledger(dirs[0]).map((r) => r.stage)).toContain("sft");

    const weights = dirs.map((d) => readSafetensors(join(d, "checkpoints", "sft", "last", "weights.safetensors")));
    expect([...weights[1].keys()].sort()).toEqual([...weights[0].keys()].sort());
    for (const [name, a] of weights[0]) {
      const b = weights[1].get(name)!;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      expect(worst, name).toBeLessThan(1e-6);
    }
    // how many workers share the work is not part of what a run means: its directory takes another number
    await expect(runPipeline({ cfg: one, runDir: dirs[1], dataDir, cacheDir })).resolves.toBeTruthy();
    // the comparison is not vacuous: LoRA's B factors start at zero and were trained
    const loraB = [...weights[0].entries()].filter(([n]) => /lora_B/.test(n));
    expect(loraB.length).toBeGreaterThan(0);
    expect(Math.max(...loraB.flatMap(([, v]) => Array.from(v, Math.abs)))).toBeGreaterThan(1e-4);
  }, 240_000);
});

describe("--workers", () => {
  const root = resolve(import.meta.dirname, "..", "..", "..");
  // the built CLI (npm run build first), with no Python: a config error must come before any worker starts
  const dpalign = (...args: string[]) => spawnSync(process.execPath, [join(root, "bin", "dpalign.js"), ...args], {
    cwd: root, encoding: "utf8", timeout: 60_000, env: { ...process.env, DPALIGN_PYTHON: join(root, "no-python-here") },
  });

  it("is the config's workers field, checked like it", () => {
    expect(applyOverrides(parseConfig(TINY), withWorkers([], 3), "test").workers).toBe(3);
    expect(withWorkers(["workers=4"], 2)).toEqual(["workers=4", "workers=2"]); // the flag wins over --set
    for (const bad of ["0", "1.5"]) {
      const r = dpalign("run", "configs/demo.yaml", "--dry-run", "--workers", bad);
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/invalid config\n {2}workers: /);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
  });
});
