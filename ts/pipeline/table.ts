/**
 * Table 1 / Table 3 layout: per epsilon, the mean over seeds with its 95% CI of the aligned and SFT
 * models' evaluation reward (eps = 0 is the pretrained model), and of the reward model's held-out
 * accuracy where the scenario trains one. Rows that a scenario does not have are left out.
 */
import { meanCi } from "./stages/evaluate.js";

export interface SweepCell {
  epsilon: number;
  seed: number;
  pretrained: number;
  sft: number;
  aligned: number;
  /** Held-out pair accuracy of the reward model (scenarios rlhf and reward-model). */
  rmAccuracy?: number;
  /** ROUGE-L (F1 x 100) of each model's completions against the real continuations. */
  rougeL?: { pretrained: number; sft: number; aligned: number };
  wallS: number;
}

export interface TableColumn {
  epsilon: number | 0;
  label: string;
  seeds: number;
  aligned: { mean: number; ci95: number };
  sft: { mean: number; ci95: number };
  rmAccuracy: { mean: number; ci95: number };
  rougeL: { sft: { mean: number; ci95: number }; aligned: { mean: number; ci95: number } };
  meanWallS: number;
}

export interface Table {
  pretrained: { mean: number; ci95: number; seeds: number; rougeL: { mean: number; ci95: number } };
  columns: TableColumn[];
}

export function buildTable(cells: readonly SweepCell[]): Table {
  const seeds = [...new Set(cells.map((c) => c.seed))];
  const pre = seeds.map((s) => cells.find((c) => c.seed === s)!.pretrained);
  const eps = [...new Set(cells.map((c) => c.epsilon))].sort((a, b) => a - b);
  return {
    pretrained: { ...meanCi(pre), seeds: pre.length, rougeL: meanCi(seeds.map((sd) => cells.find((c) => c.seed === sd)!.rougeL?.pretrained ?? NaN)) },
    columns: eps.map((e) => {
      const cs = cells.filter((c) => c.epsilon === e);
      return {
        epsilon: e, label: Number.isFinite(e) ? String(e) : "inf", seeds: cs.length,
        aligned: meanCi(cs.map((c) => c.aligned)), sft: meanCi(cs.map((c) => c.sft)), rmAccuracy: meanCi(cs.map((c) => c.rmAccuracy ?? NaN)),
        rougeL: { sft: meanCi(cs.map((c) => c.rougeL?.sft ?? NaN)), aligned: meanCi(cs.map((c) => c.rougeL?.aligned ?? NaN)) },
        meanWallS: cs.reduce((a, c) => a + c.wallS, 0) / cs.length,
      };
    }),
  };
}

const pm = (x: { mean: number; ci95: number }) => (!Number.isFinite(x.mean) ? "-" : Number.isFinite(x.ci95) ? `${x.mean.toFixed(2)} +- ${x.ci95.toFixed(2)}` : x.mean.toFixed(2));

export function renderTable(t: Table, model: string): string {
  const head = ["model", "eps=0", ...t.columns.map((c) => `eps=${c.label}`)];
  const L = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  const has = (k: "aligned" | "sft" | "rmAccuracy") => t.columns.some((c) => Number.isFinite(c[k].mean));
  const pct = (x: { mean: number; ci95: number }) => pm({ mean: 100 * x.mean, ci95: 100 * x.ci95 });
  if (has("aligned")) L.push(`| ${model} (aligned) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.aligned)).join(" | ")} |`);
  if (has("sft")) L.push(`| ${model} (SFT only) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.sft)).join(" | ")} |`);
  if (has("rmAccuracy")) L.push(`| reward model held-out accuracy (%) | - | ${t.columns.map((c) => pct(c.rmAccuracy)).join(" | ")} |`);
  if (t.columns.some((c) => Number.isFinite(c.rougeL.aligned.mean))) {
    L.push(`| ${model} (aligned) ROUGE-L | ${pm(t.pretrained.rougeL)} | ${t.columns.map((c) => pm(c.rougeL.aligned)).join(" | ")} |`);
    L.push(`| ${model} (SFT only) ROUGE-L | ${pm(t.pretrained.rougeL)} | ${t.columns.map((c) => pm(c.rougeL.sft)).join(" | ")} |`);
  }
  L.push(`| seeds | ${t.pretrained.seeds} | ${t.columns.map((c) => c.seeds).join(" | ")} |`);
  L.push(`| mean wall time per run (s) | - | ${t.columns.map((c) => c.meanWallS.toFixed(0)).join(" | ")} |`);
  const notes: string[] = [];
  if (has("aligned")) notes.push("Mean reward (positive-class logit of the public classifier, the gold labeller) of completions of held-out prompts; eps=0 is the pretrained model.");
  if (has("rmAccuracy")) notes.push("Reward model accuracy: the fraction of public held-out preference pairs it orders as labelled.");
  if (t.columns.some((c) => Number.isFinite(c.rougeL.aligned.mean))) notes.push("ROUGE-L: F1 x 100 against the held-out reviews' real continuations (rouge-score conventions).");
  notes.push("+- is the 95% CI over seeds (Student t).");
  return L.join("\n") + "\n\n" + notes.join(" ") + "\n";
}
