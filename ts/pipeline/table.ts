/** Table 1 layout: mean reward and 95% CI over seeds per epsilon; eps = 0 is the pretrained model. */
import { meanCi } from "./stages/evaluate.js";

export interface SweepCell {
  epsilon: number;
  seed: number;
  pretrained: number;
  sft: number;
  aligned: number;
  wallS: number;
}

export interface TableColumn {
  epsilon: number | 0;
  label: string;
  seeds: number;
  aligned: { mean: number; ci95: number };
  sft: { mean: number; ci95: number };
  meanWallS: number;
}

export interface Table {
  pretrained: { mean: number; ci95: number; seeds: number };
  columns: TableColumn[];
}

export function buildTable(cells: readonly SweepCell[]): Table {
  const seeds = [...new Set(cells.map((c) => c.seed))];
  const pre = seeds.map((s) => cells.find((c) => c.seed === s)!.pretrained);
  const eps = [...new Set(cells.map((c) => c.epsilon))].sort((a, b) => a - b);
  return {
    pretrained: { ...meanCi(pre), seeds: pre.length },
    columns: eps.map((e) => {
      const cs = cells.filter((c) => c.epsilon === e);
      return {
        epsilon: e, label: Number.isFinite(e) ? String(e) : "inf", seeds: cs.length,
        aligned: meanCi(cs.map((c) => c.aligned)), sft: meanCi(cs.map((c) => c.sft)),
        meanWallS: cs.reduce((a, c) => a + c.wallS, 0) / cs.length,
      };
    }),
  };
}

const pm = (x: { mean: number; ci95: number }) => (Number.isFinite(x.ci95) ? `${x.mean.toFixed(2)} +- ${x.ci95.toFixed(2)}` : x.mean.toFixed(2));

export function renderTable(t: Table, model: string): string {
  const head = ["model", "eps=0", ...t.columns.map((c) => `eps=${c.label}`)];
  const L = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  L.push(`| ${model} (aligned) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.aligned)).join(" | ")} |`);
  L.push(`| ${model} (SFT only) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.sft)).join(" | ")} |`);
  L.push(`| seeds | ${t.pretrained.seeds} | ${t.columns.map((c) => c.seeds).join(" | ")} |`);
  L.push(`| mean wall time per run (s) | - | ${t.columns.map((c) => c.meanWallS.toFixed(0)).join(" | ")} |`);
  return L.join("\n") + "\n\nMean reward (positive-class logit of the public classifier) of completions of held-out prompts; +- is the 95% CI over seeds (Student t). eps=0 is the pretrained model.\n";
}
