/**
 * Charts of a run directory or a sweep root (`dpalign plot`, and at the end of `run` and `sweep`):
 * Vega-Lite specs rendered to SVG by Vega in Node (no browser), and to PNG by resvg when it is
 * installed. Only RELEASED files are read (DESIGN.md rule 9): a run's ledger.jsonl, summary.json,
 * plan.json and config.json; a sweep's table.json and sweep-config.json. Nothing under private/
 * is opened, so no chart can show a statistic of private batches (per-step losses, rewards, KL).
 *
 * - sweep: the privacy-utility curve (mean reward vs epsilon, 95% CI bands over seeds, pre-trained
 *   and non-private as reference lines), and the same for ROUGE-L and reward-model accuracy where
 *   the sweep has them;
 * - run: epsilon spent vs sampled batch per DP stage (recomputed from the ledger's records at each
 *   record boundary), and the evaluation reward per model (mean and 95% CI over prompts).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { epsilon as accountEpsilon, type LedgerRecord, PrivacyLedger } from "../privacy/index.js";
import { DataError } from "../util/errors.js";
import { CHARTS_BEGIN, embedCharts } from "./report.js";
import { PRIVATE_DIR } from "./run-dir.js";
import type { Table } from "./table.js";

export const PLOTS_DIR = "plots";

export interface Chart {
  /** File name without extension, under plots/. */
  name: string;
  title: string;
  /** Paths relative to the run or sweep directory. */
  svg: string;
  png?: string;
}

export interface PlotResult {
  kind: "run" | "sweep";
  dir: string;
  charts: Chart[];
  /** Why a chart was not drawn (e.g. no DP stage in the ledger). */
  skipped: string[];
  /** Every file read, relative to dir: none is under private/. */
  read: string[];
  /** Set when PNG output was asked for but @resvg/resvg-js could not be loaded. */
  pngUnavailable?: string;
}

export interface PlotOptions {
  /** Also write PNGs through @resvg/resvg-js (default true; SVG only when it is not installed). */
  png?: boolean;
  /**
   * Most accountant evaluations per stage on the epsilon chart (default 40): a longer ledger is
   * thinned to evenly spaced record boundaries, the last always kept. Above `rdpAbove` points in
   * all, the RDP accountant (milliseconds per point) replaces the numerical one and says so.
   */
  maxPointsPerStage?: number;
  rdpAbove?: number;
}

const reviver = (_k: string, v: unknown) => (v === "inf" ? Infinity : v);

/** Reads released files of `dir` only, and records what it read. */
class ReleasedReader {
  readonly read: string[] = [];
  constructor(readonly dir: string) {}
  path(name: string): string {
    if (name.split(/[\\/]/)[0] === PRIVATE_DIR) throw new DataError(`plot: refusing to read ${name}: files under ${PRIVATE_DIR}/ are never released`);
    return join(this.dir, name);
  }
  exists(name: string): boolean {
    return existsSync(this.path(name));
  }
  text(name: string): string | undefined {
    const p = this.path(name);
    if (!existsSync(p)) return undefined;
    this.read.push(name);
    return readFileSync(p, "utf8");
  }
  json<T>(name: string): T | undefined {
    const t = this.text(name);
    if (t === undefined) return undefined;
    try {
      return JSON.parse(t, reviver) as T;
    } catch {
      throw new DataError(`${this.path(name)}: not valid JSON`);
    }
  }
  ledger(name: string): LedgerRecord[] {
    const p = this.path(name);
    if (!existsSync(p)) return [];
    this.read.push(name);
    return new PrivacyLedger(p).read();
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

type Spec = Record<string, unknown>;

const FONT = "DejaVu Sans, Helvetica, Arial, sans-serif";
const CONFIG: Spec = {
  font: FONT,
  background: "white",
  view: { stroke: "#ddd" },
  axis: { labelFontSize: 11, titleFontSize: 12, grid: true, gridColor: "#eee" },
  legend: { labelFontSize: 11, titleFontSize: 11, orient: "bottom", direction: "horizontal", labelLimit: 400 },
  title: { fontSize: 14, subtitleFontSize: 11, subtitleColor: "#555", anchor: "start", offset: 10 },
};

async function renderSvg(spec: Spec): Promise<string> {
  const [vega, vl] = await Promise.all([import("vega"), import("vega-lite")]);
  const compiled = vl.compile({ $schema: "https://vega.github.io/schema/vega-lite/v6.json", config: CONFIG, ...spec } as never).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

type PngRenderer = (svg: string) => Buffer;

async function pngRenderer(): Promise<PngRenderer | string> {
  try {
    const { Resvg } = await import("@resvg/resvg-js");
    return (svg) =>
      new Resvg(svg, { fitTo: { mode: "zoom", value: 2 }, background: "white", font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans", sansSerifFamily: "DejaVu Sans" } })
        .render()
        .asPng();
  } catch (e) {
    return `@resvg/resvg-js is not available (${(e as Error).message.split("\n")[0]}); SVG only`;
  }
}

async function writeCharts(dir: string, specs: { name: string; title: string; spec: Spec }[], o: PlotOptions): Promise<{ charts: Chart[]; pngUnavailable?: string }> {
  if (specs.length === 0) return { charts: [] };
  mkdirSync(join(dir, PLOTS_DIR), { recursive: true });
  const png = o.png === false ? undefined : await pngRenderer();
  const charts: Chart[] = [];
  for (const s of specs) {
    const svg = await renderSvg(s.spec);
    const svgRel = `${PLOTS_DIR}/${s.name}.svg`;
    writeFileSync(join(dir, svgRel), svg);
    const chart: Chart = { name: s.name, title: s.title, svg: svgRel };
    if (typeof png === "function") {
      chart.png = `${PLOTS_DIR}/${s.name}.png`;
      writeFileSync(join(dir, chart.png), png(svg));
    }
    charts.push(chart);
  }
  return { charts, ...(typeof png === "string" ? { pngUnavailable: png } : {}) };
}

/** Sets the charts section of a Markdown file of `dir` (report.md, table.md), if the file exists. */
function embedInto(dir: string, file: string, charts: readonly Chart[], before?: string): void {
  const p = join(dir, file);
  if (!existsSync(p)) return;
  const md = readFileSync(p, "utf8");
  if (charts.length === 0 && !md.includes(CHARTS_BEGIN)) return;
  writeFileSync(p, embedCharts(md, charts.map((c) => ({ file: c.svg, title: c.title, ...(c.png ? { png: c.png } : {}) })), before));
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : x === Infinity ? "inf" : "-");

// ---------------------------------------------------------------------------------------------
// Sweep: privacy-utility curves from table.json

interface MeanCi {
  mean: number | null;
  ci95: number | null;
}
const finite = (x: number | null | undefined): x is number => typeof x === "number" && Number.isFinite(x);

interface CurveSeries {
  name: string;
  /** Per epsilon column (finite epsilons are the curve; eps = inf is a reference line). */
  get: (c: Table["columns"][number]) => MeanCi;
}

interface CurveArgs {
  title: string;
  subtitle: string[];
  yTitle: string;
  table: Table;
  series: CurveSeries[];
  /** Horizontal reference lines (pre-trained, non-private). */
  refs: { label: string; value: MeanCi }[];
  scale?: number;
}

/** Mean vs epsilon (log axis) with 95% CI bands, and labelled horizontal reference lines. */
function curveSpec(a: CurveArgs): Spec | undefined {
  const k = a.scale ?? 1;
  const cols = a.table.columns.filter((c) => Number.isFinite(c.epsilon) && c.epsilon > 0);
  const rows = a.series.flatMap((s) =>
    cols.flatMap((c) => {
      const v = s.get(c);
      if (!finite(v.mean)) return [];
      const ci = finite(v.ci95) ? v.ci95 : 0;
      return [{ eps: c.epsilon, series: s.name, mean: k * v.mean, lo: k * (v.mean - ci), hi: k * (v.mean + ci), seeds: c.seeds }];
    }),
  );
  if (rows.length === 0) return undefined;
  const refs = a.refs.filter((r) => finite(r.value.mean)).map((r) => ({
    label: `${r.label}: ${fmt(k * r.value.mean!)}${finite(r.value.ci95) && r.value.ci95 > 0 ? ` ± ${fmt(k * r.value.ci95)}` : ""}`,
    y: k * r.value.mean!, lo: k * (r.value.mean! - (finite(r.value.ci95) ? r.value.ci95 : 0)), hi: k * (r.value.mean! + (finite(r.value.ci95) ? r.value.ci95 : 0)),
  }));
  const epsValues = [...new Set(rows.map((r) => r.eps))].sort((x, y) => x - y);
  const x = {
    field: "eps", type: "quantitative", title: "target epsilon (log scale; delta fixed)",
    scale: { type: "log", base: 2, domain: [epsValues[0] / 1.25, epsValues.at(-1)! * 1.25], nice: false },
    axis: { values: epsValues, format: "~g" },
  };
  const color = { field: "series", type: "nominal", title: null, sort: a.series.map((s) => s.name), legend: { symbolOpacity: 1, symbolType: "circle", direction: "vertical" } };
  const layers: Spec[] = [
    { data: { values: rows }, mark: { type: "area", opacity: 0.18 }, encoding: { x, y: { field: "lo", type: "quantitative" }, y2: { field: "hi" }, color } },
    {
      data: { values: rows },
      mark: { type: "line", point: { size: 50, filled: true } },
      encoding: {
        x, y: { field: "mean", type: "quantitative", title: a.yTitle, scale: { zero: false } }, color,
        tooltip: [{ field: "series" }, { field: "eps", title: "epsilon" }, { field: "mean", format: ".3f" }, { field: "lo", format: ".3f" }, { field: "hi", format: ".3f" }, { field: "seeds" }],
      },
    },
  ];
  if (refs.length) {
    layers.push(
      { data: { values: refs }, mark: { type: "rect", color: "#888", opacity: 0.08 }, encoding: { y: { field: "lo", type: "quantitative" }, y2: { field: "hi" } } },
      {
        data: { values: refs },
        mark: { type: "rule", color: "#444", strokeWidth: 1.3 },
        encoding: {
          y: { field: "y", type: "quantitative" },
          strokeDash: { field: "label", type: "nominal", title: "reference lines (grey band: 95% CI)", sort: refs.map((x) => x.label), scale: { range: [[2, 3], [7, 4]] }, legend: { direction: "vertical", symbolStrokeColor: "#444", titleLimit: 500, labelLimit: 500, symbolSize: 300 } },
        },
      },
    );
  }
  return { title: { text: a.title, subtitle: a.subtitle }, width: 520, height: 300, layer: layers };
}

interface SweepConfigLike {
  name?: string;
  scenario?: string;
  privacy?: { delta?: number | string; accountant?: string };
}

/** Who scores completions: the gold labeller (rlhf), the public classifier (scenario 1); "" when unknown (older runs). */
function rewardName(scenario: string | undefined): string {
  return scenario === "rlhf" ? "gold labeller" : scenario === "classifier" ? "public classifier" : "";
}

export async function plotSweep(root: string, o: PlotOptions = {}): Promise<PlotResult> {
  const r = new ReleasedReader(root);
  const table = r.json<Table>("table.json");
  if (!table) throw new DataError(`${join(root, "table.json")} does not exist: not a sweep root (or no run has finished)`);
  const cfg = r.json<SweepConfigLike>("sweep-config.json") ?? {};
  const name = cfg.name ?? "sweep";
  // The like-for-like non-private column (the DP settings, no noise) is the reference where the
  // sweep has it; the non-private recipe's column is drawn beside it.
  const infDp = table.columns.find((c) => c.epsilon === Infinity && c.dpSettings);
  const infOwn = table.columns.find((c) => c.epsilon === Infinity && !c.dpSettings);
  const inf = infDp ?? infOwn;
  const infRefs = (get: (c: Table["columns"][number]) => MeanCi | undefined) => [
    ...(infDp ? [{ label: "non-private, DP settings (eps = inf)", value: get(infDp) ?? { mean: null, ci95: null } }] : []),
    ...(infOwn ? [{ label: `non-private${infDp ? ", own recipe" : " aligned"} (eps = inf)`, value: get(infOwn) ?? { mean: null, ci95: null } }] : []),
  ];
  const seeds = [...new Set(table.columns.map((c) => c.seeds))].join("/");
  const delta = typeof cfg.privacy?.delta === "number" ? `, delta ${cfg.privacy.delta.toExponential(0)}` : "";
  const sub = `mean over ${seeds} seeds per epsilon, bands: 95% CI over seeds (Student t)${delta}`;
  const specs: { name: string; title: string; spec: Spec }[] = [];
  const skipped: string[] = [];
  const judge = rewardName(cfg.scenario);
  const utility = curveSpec({
    title: `Privacy-utility: ${name}`,
    subtitle: [sub, `reward: mean ${judge ? `${judge} ` : ""}reward of completions of held-out public prompts`],
    yTitle: judge ? `mean reward (${judge})` : "mean reward",
    table,
    series: [{ name: "aligned (DP-PPO)", get: (c) => c.aligned }, { name: "SFT only (DP-SFT)", get: (c) => c.sft }],
    refs: [{ label: "pre-trained (eps = 0)", value: table.pretrained }, ...infRefs((c) => c.aligned)],
  });
  if (utility) specs.push({ name: "privacy-utility", title: "Privacy-utility curve (mean reward vs epsilon)", spec: utility });
  else skipped.push(`privacy-utility: the sweep has no reward evaluation${cfg.scenario === "reward-model" ? " (scenario reward-model: see the reward-model accuracy chart)" : ""}`);
  const rouge = curveSpec({
    title: `ROUGE-L vs epsilon: ${name}`,
    subtitle: [sub, "ROUGE-L F1 x 100 against the held-out reviews' real continuations"],
    yTitle: "ROUGE-L (F1 x 100)",
    table,
    series: [{ name: "aligned (DP-PPO)", get: (c) => c.rougeL?.aligned ?? { mean: null, ci95: null } }, { name: "SFT only (DP-SFT)", get: (c) => c.rougeL?.sft ?? { mean: null, ci95: null } }],
    refs: [{ label: "pre-trained (eps = 0)", value: table.pretrained.rougeL ?? { mean: null, ci95: null } }, ...infRefs((c) => c.rougeL?.aligned)],
  });
  if (rouge) specs.push({ name: "rouge-l", title: "ROUGE-L vs epsilon", spec: rouge });
  const rm = curveSpec({
    title: `Reward model accuracy vs epsilon: ${name}`,
    subtitle: [sub, "accuracy: fraction of public held-out preference pairs ordered as labelled"],
    yTitle: "held-out pair accuracy (%)",
    table,
    scale: 100,
    series: [{ name: "DP reward model", get: (c) => c.rmAccuracy ?? { mean: null, ci95: null } }],
    refs: inf ? [{ label: "non-private reward model (eps = inf)", value: inf.rmAccuracy ?? { mean: null, ci95: null } }] : [],
  });
  if (rm) specs.push({ name: "rm-accuracy", title: "Reward model accuracy vs epsilon", spec: rm });
  const { charts, pngUnavailable } = await writeCharts(root, specs, o);
  embedInto(root, "table.md", charts);
  return { kind: "sweep", dir: root, charts, skipped, read: r.read, ...(pngUnavailable ? { pngUnavailable } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Run: epsilon spent per stage (ledger) and evaluation reward per model (summary.json)

interface RunSummaryLike {
  delta?: number;
  privacy?: { accountant?: string; target?: { epsilon: number; delta: number }; composed?: { rule?: string; epsilon?: number }; differentiallyPrivate?: boolean; notPrivateReason?: string };
  evals?: { model: string; meanReward: number; ci95: number; n: number; evalRm?: { meanReward: number; ci95: number } }[];
}
interface PlanLike {
  delta?: number;
  epsilon?: number;
  accountant?: string;
  composition?: string;
}

/** Evenly spaced indices of `n` items, at most `k`, always the last. */
function thin(n: number, k: number): number[] {
  if (n <= k) return [...Array(n).keys()];
  const out = new Set<number>();
  for (let i = 1; i <= k; i++) out.add(Math.round((i * n) / k) - 1);
  return [...out].sort((a, b) => a - b);
}

/** Epsilon spent by each DP stage after each (kept) ledger record, from the records alone. */
export function epsilonCurve(records: readonly LedgerRecord[], delta: number, o: PlotOptions = {}): { rows: { stage: string; batch: number; epsilon: number }[]; accountant: string; thinned: boolean } {
  const maxPts = o.maxPointsPerStage ?? 40;
  const stages = [...new Set(records.map((r) => r.stage))];
  const plan = stages.map((stage) => {
    const recs = records.filter((r) => r.stage === stage);
    return { stage, recs, keep: thin(recs.length, maxPts) };
  });
  const total = plan.reduce((a, p) => a + p.keep.length, 0);
  const useRdp = total > (o.rdpAbove ?? 120);
  const used = new Set<string>();
  const rows: { stage: string; batch: number; epsilon: number }[] = [];
  for (const p of plan) {
    rows.push({ stage: p.stage, batch: 0, epsilon: 0 });
    const keep = new Set(p.keep);
    let batch = 0;
    // Mechanisms so far, merged by (q, accounted sigma): steps add up.
    const mech = new Map<string, { q: number; sigma: number; steps: number }>();
    p.recs.forEach((r, i) => {
      const sigma = r.sigma / Math.sqrt(r.reuse);
      const key = `${r.q}|${sigma}`;
      const m = mech.get(key) ?? { q: r.q, sigma, steps: 0 };
      m.steps += r.steps;
      mech.set(key, m);
      batch = r.to_batch ?? batch + r.steps;
      if (!keep.has(i)) return;
      const res = accountEpsilon({ mechanisms: [...mech.values()], delta, accountant: useRdp ? "rdp" : r.accountant });
      used.add(res.accountant);
      rows.push({ stage: p.stage, batch, epsilon: res.epsilon });
    });
  }
  return { rows, accountant: [...used].join("+") || "-", thinned: plan.some((p) => p.keep.length < p.recs.length) };
}

const STAGE_LABEL: Record<string, string> = { sft: "DP-SFT (D1)", rm: "DP reward model (D2)", ppo: "DP-PPO (D3)" };

export async function plotRun(dir: string, o: PlotOptions = {}): Promise<PlotResult> {
  const r = new ReleasedReader(dir);
  const summary = r.json<RunSummaryLike>("summary.json");
  const plan = r.json<PlanLike>("plan.json");
  const cfg = r.json<{ name?: string; scenario?: string; seed?: number }>("config.json") ?? {};
  if (!summary && !plan && !r.exists("ledger.jsonl")) throw new DataError(`${dir}: no summary.json, plan.json or ledger.jsonl: not a run directory`);
  const records = r.ledger("ledger.jsonl");
  const specs: { name: string; title: string; spec: Spec }[] = [];
  const skipped: string[] = [];
  const name = cfg.name ?? relative(join(dir, ".."), dir).split(sep).pop() ?? "run";

  const delta = summary?.privacy?.target?.delta ?? summary?.delta ?? plan?.delta;
  if (records.length === 0) {
    skipped.push("epsilon: the ledger records no DP stage (a non-private run, or none has run yet)");
  } else if (!finite(delta)) {
    skipped.push("epsilon: no delta in summary.json or plan.json");
  } else {
    const curve = epsilonCurve(records, delta, o);
    const target = summary?.privacy?.target?.epsilon ?? plan?.epsilon;
    const stages = [...new Set(curve.rows.map((x) => x.stage))];
    const rows = curve.rows.map((x) => ({ ...x, stageLabel: STAGE_LABEL[x.stage] ?? x.stage }));
    const labels = stages.map((s) => STAGE_LABEL[s] ?? s);
    const x = { field: "batch", type: "quantitative", title: "sampled batches of the stage (noisy steps / T_reuse)" };
    const y = { field: "epsilon", type: "quantitative", title: `epsilon spent (delta ${delta.toExponential(0)}, ${curve.accountant.toUpperCase()})` };
    const color = { field: "stageLabel", type: "nominal", title: null, sort: labels, legend: { symbolSize: 120 } };
    const dash = { field: "stageLabel", type: "nominal", title: null, sort: labels, scale: { range: [[1, 0], [6, 3], [2, 2], [8, 2, 2, 2]] } };
    const shape = { field: "stageLabel", type: "nominal", title: null, sort: labels, scale: { range: ["circle", "square", "triangle-up", "diamond"] } };
    const layers: Spec[] = [
      {
        data: { values: rows },
        mark: { type: "line", strokeWidth: 2 },
        encoding: { x, y, color, strokeDash: dash },
      },
      {
        data: { values: rows },
        // Stages with the same q, sigma and batches coincide: distinct shapes and dashes keep each visible.
        mark: { type: "point", size: 60, filled: false, strokeWidth: 1.6 },
        encoding: { x, y, color, shape, tooltip: [{ field: "stageLabel", title: "stage" }, { field: "batch" }, { field: "epsilon", format: ".4f" }] },
      },
    ];
    if (finite(target)) {
      const t = [{ y: target, label: `target epsilon ${fmt(target, 2)}${plan?.composition === "sequential" ? " (whole pipeline, sequential)" : " (per stage)"}` }];
      layers.push(
        { data: { values: t }, mark: { type: "rule", color: "#c0392b", strokeDash: [5, 4] }, encoding: { y: { field: "y", type: "quantitative" } } },
        { data: { values: t }, mark: { type: "text", align: "left", dx: 4, dy: -6, fontSize: 11, color: "#c0392b" }, encoding: { y: { field: "y", type: "quantitative" }, x: { value: 0 }, text: { field: "label" } } },
      );
    }
    const composed = summary?.privacy?.composed?.epsilon;
    const pts = (st: string) => JSON.stringify(curve.rows.filter((x) => x.stage === st).map((x) => [x.batch, x.epsilon]));
    const same = stages.flatMap((a, i) => stages.slice(i + 1).filter((b) => pts(a) === pts(b)).map((b) => `${STAGE_LABEL[a] ?? a} and ${STAGE_LABEL[b] ?? b} coincide (same q, sigma and batches)`));
    const subtitle = [
      `from ledger.jsonl: each stage's executed mechanisms at each record${curve.thinned ? " (evenly thinned)" : ""}, accountant ${curve.accountant.toUpperCase()}${curve.accountant === "rdp" && records.some((x) => x.accountant !== "rdp") ? " (RDP upper bound used for speed; the run's report uses " + records[0].accountant.toUpperCase() + ")" : ""}`,
      ...(plan?.composition
        ? [`composition: ${plan.composition === "parallel" ? "parallel (disjoint D1/D2/D3: the largest stage's epsilon)" : "sequential (one user in every stage)"}${finite(composed) ? `; pipeline epsilon ${fmt(composed, 3)}` : ""}`]
        : []),
      ...same,
      ...(summary?.privacy?.differentiallyPrivate === false && summary.privacy.notPrivateReason ? ["NOT differentially private: " + summary.privacy.notPrivateReason.slice(0, 100)] : []),
    ];
    specs.push({ name: "epsilon", title: "Epsilon spent per stage", spec: { title: { text: `Privacy spent per stage: ${name}`, subtitle }, width: 600, height: 280, layer: layers } });
  }

  const evals = summary?.evals ?? [];
  if (evals.length === 0) {
    skipped.push("evaluation: summary.json has no evaluation (scenario reward-model, or the run has not finished)");
  } else {
    const judge = rewardName(cfg.scenario) || "reward";
    const order = ["pretrained", "sft", "aligned"];
    const label = (m: string) => ({ pretrained: "pre-trained (eps = 0)", sft: "DP-SFT", aligned: "aligned (DP-PPO)" })[m] ?? m;
    const rows = evals.flatMap((e) => [
      { model: label(e.model), judge, mean: e.meanReward, lo: e.meanReward - e.ci95, hi: e.meanReward + e.ci95, n: e.n },
      ...(e.evalRm ? [{ model: label(e.model), judge: "evaluation RM (non-private, public pairs)", mean: e.evalRm.meanReward, lo: e.evalRm.meanReward - e.evalRm.ci95, hi: e.evalRm.meanReward + e.evalRm.ci95, n: e.n }] : []),
    ]);
    const rank = (m: string) => (order.includes(m) ? order.indexOf(m) : order.length);
    const sortModels = [...evals].sort((a, b) => rank(a.model) - rank(b.model)).map((e) => label(e.model));
    const y = { field: "model", type: "nominal", title: null, sort: sortModels, axis: { labelFontSize: 12, labelLimit: 300 } };
    const judges = new Set(rows.map((x) => x.judge)).size;
    const color = { field: "judge", type: "nominal", title: "judged by", sort: [judge], ...(judges > 1 ? {} : { legend: null }) };
    const yOffset = { field: "judge", sort: [judge] };
    const n = Math.max(...evals.map((e) => e.n));
    specs.push({
      name: "evaluation",
      title: "Evaluation reward per model",
      spec: {
        title: { text: `Evaluation reward per model: ${name}`, subtitle: [`mean ${judges > 1 || judge === "reward" ? "" : `${judge} `}reward of completions of ${n} held-out public prompts, bars: 95% CI over prompts`] },
        width: 520,
        height: { step: judges > 1 ? 26 : 34 },
        data: { values: rows },
        layer: [
          { mark: { type: "rule", strokeWidth: 2 }, encoding: { y, yOffset, x: { field: "lo", type: "quantitative", title: "mean reward" }, x2: { field: "hi" }, color } },
          {
            mark: { type: "point", filled: true, size: 70 },
            encoding: { y, yOffset, x: { field: "mean", type: "quantitative" }, color, tooltip: [{ field: "model" }, { field: "judge" }, { field: "mean", format: ".3f" }, { field: "lo", format: ".3f" }, { field: "hi", format: ".3f" }, { field: "n" }] },
          },
          { mark: { type: "text", dy: -10, fontSize: 10 }, encoding: { y, yOffset, x: { field: "mean", type: "quantitative" }, text: { field: "mean", format: ".3f" }, color } },
          { data: { values: [{ x: 0 }] }, mark: { type: "rule", color: "#999" }, encoding: { x: { field: "x", type: "quantitative" } } },
        ],
      },
    });
  }
  const { charts, pngUnavailable } = await writeCharts(dir, specs, o);
  embedInto(dir, "report.md", charts);
  return { kind: "run", dir, charts, skipped, read: r.read, ...(pngUnavailable ? { pngUnavailable } : {}) };
}

/** A sweep root (table.json) or a run directory (ledger.jsonl / summary.json). */
export async function plot(dir: string, o: PlotOptions = {}): Promise<PlotResult> {
  if (!existsSync(dir)) throw new DataError(`${dir} does not exist`);
  return existsSync(join(dir, "table.json")) ? plotSweep(dir, o) : plotRun(dir, o);
}

/** For the end of `run` and `sweep`: charts are a convenience and never fail the pipeline. */
export async function plotQuietly(dir: string, log: (line: string) => void, kind: "run" | "sweep"): Promise<PlotResult | undefined> {
  try {
    const res = kind === "sweep" ? await plotSweep(dir) : await plotRun(dir);
    if (res.charts.length) log(`plots: ${res.charts.map((c) => c.svg).join(", ")}${res.pngUnavailable ? ` (${res.pngUnavailable})` : ""}`);
    return res;
  } catch (e) {
    log(`plots: not drawn (${(e as Error).message}); \`dpalign plot ${dir}\` retries`);
    return undefined;
  }
}
