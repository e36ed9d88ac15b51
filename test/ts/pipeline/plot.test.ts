import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { epsilon, PrivacyLedger } from "../../../ts/privacy/index.js";
import { epsilonCurve, plot, plotRun, plotSweep } from "../../../ts/pipeline/plot.js";
import { RunDir } from "../../../ts/pipeline/run-dir.js";
import { buildTable, renderTable, type SweepCell } from "../../../ts/pipeline/table.js";
import { CHARTS_BEGIN, CHARTS_END } from "../../../ts/pipeline/report.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { runSweep } from "../../../ts/pipeline/sweep.js";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

const tmp = mkdtempSync(join(tmpdir(), "dpalign-plot-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Values that exist only in private/: no chart may show them. */
const PRIVATE_MARKERS = ["987.654", "SECRET-METRIC", "424242"];

function writePrivateMetrics(dir: string): void {
  mkdirSync(join(dir, "private"), { recursive: true, mode: 0o700 });
  const line = (step: number) => JSON.stringify({ stage: "ppo", step, loss: 987.654321, reward: 424242.5, note: "SECRET-METRIC" });
  writeFileSync(join(dir, "private", "metrics.jsonl"), [0, 1, 2].map(line).join("\n") + "\n", { mode: 0o600 });
}

function expectNoPrivate(dir: string, files: string[]): void {
  for (const f of files) {
    const text = readFileSync(join(dir, f), "utf8");
    for (const m of PRIVATE_MARKERS) expect(text, `${f} shows a private value`).not.toContain(m);
  }
}

function sweepRoot(name: string, cells: SweepCell[], scenario: string): string {
  const root = join(tmp, name);
  const r = new RunDir(root);
  r.writeJson("table.json", buildTable(cells));
  r.writeJson("sweep-config.json", { name: "tiny", scenario, privacy: { delta: 1e-6 } });
  writeFileSync(r.path("table.md"), renderTable(buildTable(cells), "tiny"));
  writePrivateMetrics(root);
  return root;
}

describe("dpalign plot: sweep root", () => {
  const cells: SweepCell[] = [0, 1, 2].flatMap((seed) =>
    [Infinity, 8, 4, 1].map((eps) => ({
      epsilon: eps, seed, pretrained: 0.06, sft: 0.05 + 0.01 * seed, aligned: (Number.isFinite(eps) ? eps / 10 : 2) + 0.05 * seed,
      rmAccuracy: 0.8 + 0.01 * seed, rougeL: { pretrained: 6.6, sft: 6.5 + 0.1 * seed, aligned: 6 + 0.2 * seed }, wallS: 40,
    })),
  );

  it("draws the privacy-utility curve with CI bands and reference lines, and the ROUGE-L and reward-model charts", async () => {
    const root = sweepRoot("sweep", cells, "rlhf");
    const res = await plot(root);
    expect(res.kind).toBe("sweep");
    expect(res.charts.map((c) => c.name)).toEqual(["privacy-utility", "rouge-l", "rm-accuracy"]);
    for (const c of res.charts) {
      expect(existsSync(join(root, c.svg))).toBe(true);
      expect(existsSync(join(root, c.png!))).toBe(true);
      expect(readFileSync(join(root, c.png!)).subarray(1, 4).toString()).toBe("PNG");
    }
    const svg = readFileSync(join(root, "plots/privacy-utility.svg"), "utf8");
    expect(svg).toMatch(/^<svg/);
    for (const s of ["Privacy-utility: tiny", "aligned (DP-PPO)", "SFT only (DP-SFT)", "pre-trained (eps = 0): 0.06", "non-private aligned (eps = inf): 2.05", "target epsilon (log scale", "mean reward (gold labeller)", "mark-area", "mark-line", "mark-rule"]) {
      expect(svg).toContain(s);
    }
    expect(readFileSync(join(root, "plots/rm-accuracy.svg"), "utf8")).toContain("held-out pair accuracy (%)");
    expect(readFileSync(join(root, "plots/rouge-l.svg"), "utf8")).toContain("ROUGE-L (F1 x 100)");
    // Released inputs only.
    expect(res.read).toEqual(["table.json", "sweep-config.json"]);
    expectNoPrivate(root, res.charts.map((c) => c.svg));
    // table.md links its charts, once, however often plot runs.
    await plotSweep(root, { png: false });
    const md = readFileSync(join(root, "table.md"), "utf8");
    expect(md).toContain("![Privacy-utility curve (mean reward vs epsilon)](plots/privacy-utility.svg)");
    expect(md.split("## Charts").length).toBe(2);
    expect(md.startsWith("| model |")).toBe(true);
  });

  it("draws only the reward-model chart for a reward-model sweep", async () => {
    const root = sweepRoot("sweep-rm", cells.map((c) => ({ ...c, pretrained: NaN, sft: NaN, aligned: NaN, rougeL: undefined })), "reward-model");
    const res = await plotSweep(root, { png: false });
    expect(res.charts.map((c) => c.name)).toEqual(["rm-accuracy"]);
    expect(res.charts[0].png).toBeUndefined();
    expect(existsSync(join(root, "plots/rm-accuracy.png"))).toBe(false);
    expect(res.skipped.join(" ")).toMatch(/privacy-utility/);
    expect(readFileSync(join(root, "plots/rm-accuracy.svg"), "utf8")).toContain("non-private reward model (eps = inf)");
  });
});

describe("dpalign plot: run directory", () => {
  const delta = 1e-6;
  const sft = { q: 0.1, sigma: 1.2, clip: 1 };
  const ppo = { q: 0.05, sigma: 1.5, clip: 1 };

  function runDir(name: string): string {
    const dir = join(tmp, name);
    const run = new RunDir(dir);
    const ledger = new PrivacyLedger(run.path("ledger.jsonl"));
    for (const [from, to] of [[0, 10], [10, 20], [20, 30]]) ledger.append({ stage: "sft", ...sft, steps: to - from, accountant: "prv", noise: "secure", from_batch: from, to_batch: to });
    for (const [from, to] of [[0, 25], [25, 50]]) ledger.append({ stage: "ppo", ...ppo, steps: to - from, reuse: 1, accountant: "prv", noise: "secure", from_batch: from, to_batch: to });
    run.writeJson("plan.json", { dp: true, epsilon: 4, delta, accountant: "prv", composition: "parallel" });
    run.writeJson("config.json", { name: "tiny-run", scenario: "classifier", seed: 0 });
    run.writeJson("summary.json", {
      differentiallyPrivate: true, epsilon: 3.9, delta,
      privacy: { accountant: "prv", target: { epsilon: 4, delta }, composed: { epsilon: 3.9, delta, rule: "parallel" }, differentiallyPrivate: true },
      evals: [
        { model: "pretrained", meanReward: 0.06, ci95: 0.07, n: 1000, samples: [] },
        { model: "sft", meanReward: 0.08, ci95: 0.07, n: 1000, samples: [] },
        { model: "aligned", meanReward: 0.5, ci95: 0.07, n: 1000, samples: [] },
      ],
    });
    writeFileSync(run.path("report.md"), `# dpalign run\n\n## Evaluation\n\n${CHARTS_BEGIN}\n${CHARTS_END}\n\n## Privacy\n\ntext\n`);
    writePrivateMetrics(dir);
    return dir;
  }

  it("draws epsilon spent per stage from the ledger and the evaluation reward per model, and embeds them in report.md", async () => {
    const dir = runDir("run");
    const res = await plot(dir);
    expect(res.kind).toBe("run");
    expect(res.charts.map((c) => c.name)).toEqual(["epsilon", "evaluation"]);
    const eps = readFileSync(join(dir, "plots/epsilon.svg"), "utf8");
    for (const s of ["Privacy spent per stage: tiny-run", "DP-SFT (D1)", "DP-PPO (D3)", "target epsilon 4.00 (per stage)", "epsilon spent (delta 1e-6, PRV)", "sampled batches of the stage", "mark-line", "mark-symbol"]) expect(eps).toContain(s);
    const ev = readFileSync(join(dir, "plots/evaluation.svg"), "utf8");
    for (const s of ["Evaluation reward per model: tiny-run", "pre-trained (eps = 0)", "DP-SFT", "aligned (DP-PPO)", "0.500", "1000 held-out public prompts", "mark-rule"]) expect(ev).toContain(s);
    expect(res.read.sort()).toEqual(["config.json", "ledger.jsonl", "plan.json", "summary.json"]);
    expect(res.read.some((f) => f.startsWith("private"))).toBe(false);
    expectNoPrivate(dir, res.charts.flatMap((c) => [c.svg]));
    const md = readFileSync(join(dir, "report.md"), "utf8");
    expect(md).toContain("![Epsilon spent per stage](plots/epsilon.svg)");
    expect(md).toContain("![Evaluation reward per model](plots/evaluation.svg)");
    expect(md.indexOf("## Charts")).toBeLessThan(md.indexOf("## Privacy"));
    await plotRun(dir, { png: false });
    expect(readFileSync(join(dir, "report.md"), "utf8").split("## Charts").length).toBe(2);
  });

  it("computes epsilon at every ledger record boundary with the accountant's API, the last point the stage's epsilon", () => {
    const dir = runDir("curve");
    const records = new PrivacyLedger(join(dir, "ledger.jsonl")).read();
    const c = epsilonCurve(records, delta);
    expect(c.accountant).toBe("prv");
    expect(c.rows.filter((r) => r.stage === "sft").map((r) => r.batch)).toEqual([0, 10, 20, 30]);
    expect(c.rows.filter((r) => r.stage === "ppo").map((r) => r.batch)).toEqual([0, 25, 50]);
    const sftEps = c.rows.filter((r) => r.stage === "sft").map((r) => r.epsilon);
    expect(sftEps[0]).toBe(0);
    for (let i = 1; i < sftEps.length; i++) expect(sftEps[i]).toBeGreaterThan(sftEps[i - 1]);
    expect(sftEps.at(-1)).toBeCloseTo(epsilon({ mechanisms: [{ ...sft, steps: 30 }], delta, accountant: "prv" }).epsilon, 10);
    // Many points: thinned (last kept), and the RDP accountant when asked for speed, labelled.
    const thin = epsilonCurve(records, delta, { maxPointsPerStage: 2, rdpAbove: 0 });
    expect(thin.accountant).toBe("rdp");
    expect(thin.thinned).toBe(true);
    expect(thin.rows.filter((r) => r.stage === "sft").map((r) => r.batch)).toEqual([0, 20, 30]);
    expect(thin.rows.filter((r) => r.stage === "sft").at(-1)!.epsilon).toBeCloseTo(epsilon({ mechanisms: [{ ...sft, steps: 30 }], delta, accountant: "rdp" }).epsilon, 10);
  });

  it("skips the epsilon chart of a non-private run and the evaluation chart of a run without one", async () => {
    const dir = join(tmp, "nonprivate");
    const run = new RunDir(dir);
    run.writeJson("plan.json", { dp: false, epsilon: Infinity, delta });
    run.writeJson("summary.json", { privacy: { target: { epsilon: Infinity, delta } }, evals: [] });
    const res = await plotRun(dir, { png: false });
    expect(res.charts).toEqual([]);
    expect(res.skipped.join(" ")).toMatch(/no DP stage/);
    await expect(plot(join(tmp, "missing"))).rejects.toThrow(/does not exist/);
  });
});

describe("charts at the end of run and sweep", () => {
  it("a sweep draws its curve and each run its charts, embedded in table.md and report.md (real worker, tiny preset)", async () => {
    const client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
    try {
      const dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
      const cfg = parseConfig({ ...TINY, sweep: { epsilons: ["inf", 8], seeds: [1] } });
      const root = join(tmp, "e2e-sweep");
      await runSweep({ cfg, root, dataDir, cacheDir: tmpDir("dpalign-cache-"), api: new WorkerApi(client) });
      expect(existsSync(join(root, "plots", "privacy-utility.svg"))).toBe(true);
      expect(readFileSync(join(root, "table.md"), "utf8")).toContain("(plots/privacy-utility.svg)");
      const dp = join(root, "eps8-seed1");
      for (const f of ["epsilon.svg", "epsilon.png", "evaluation.svg", "evaluation.png"]) expect(existsSync(join(dp, "plots", f)), f).toBe(true);
      const report = readFileSync(join(dp, "report.md"), "utf8");
      expect(report).toContain("![Epsilon spent per stage](plots/epsilon.svg)");
      expect(report.indexOf("## Charts")).toBeLessThan(report.indexOf("## Privacy"));
      // The non-private run has no ledger records: its evaluation only.
      expect(existsSync(join(root, "epsinf-seed1", "plots", "epsilon.svg"))).toBe(false);
      expect(existsSync(join(root, "epsinf-seed1", "plots", "evaluation.svg"))).toBe(true);
    } finally {
      await client.close();
    }
  }, 180_000);
});
