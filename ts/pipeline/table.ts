/**
 * Table 1 / Table 3 layout: per epsilon, the mean over seeds with its 95% CI of the aligned and SFT
 * models' evaluation reward (eps = 0 is the pretrained model), and of the reward model's held-out
 * accuracy where the scenario trains one. Rows that a scenario does not have are left out.
 *
 * Two eps = inf columns can appear: "inf" with the non-private recipe (config `nonPrivate`, TRL's
 * settings, as the paper's non-private column), and "inf (DP settings)", non-private with exactly
 * the DP columns' settings (data, batches, steps, lr, no whitening): the like-for-like reference.
 * The recovery ratio (eps - pretrained) / (inf - pretrained) is computed per seed against the
 * like-for-like column where the sweep has it (else against "inf").
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
  /** eps = inf run with the DP columns' settings instead of the `nonPrivate` recipe. */
  dpSettings?: boolean;
}

type MeanCi = { mean: number; ci95: number };

export interface TableColumn {
  epsilon: number | 0;
  label: string;
  /** The non-private column run with the DP settings (see the file comment). */
  dpSettings: boolean;
  /** Per seed (aligned - pretrained) / (reference inf aligned - pretrained), finite epsilons only. */
  recovery: MeanCi;
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
  const keys = [...new Map(cells.map((c) => [columnKey(c), { epsilon: c.epsilon, dpSettings: !!c.dpSettings }])).values()]
    .sort((a, b) => a.epsilon - b.epsilon || Number(a.dpSettings) - Number(b.dpSettings));
  const reference = cells.some((c) => c.epsilon === Infinity && c.dpSettings);
  const refAligned = (seed: number) => cells.find((c) => c.seed === seed && c.epsilon === Infinity && !!c.dpSettings === reference)?.aligned ?? NaN;
  return {
    pretrained: { ...meanCi(pre), seeds: pre.length, rougeL: meanCi(seeds.map((sd) => cells.find((c) => c.seed === sd)!.rougeL?.pretrained ?? NaN)) },
    columns: keys.map(({ epsilon: e, dpSettings }) => {
      const cs = cells.filter((c) => c.epsilon === e && !!c.dpSettings === dpSettings);
      const isReference = e === Infinity && dpSettings === reference;
      const ratios = isReference ? [] : cs.map((c) => (c.aligned - c.pretrained) / (refAligned(c.seed) - c.pretrained)).filter(Number.isFinite);
      return {
        epsilon: e, label: Number.isFinite(e) ? String(e) : dpSettings ? "inf (DP settings)" : "inf", seeds: cs.length, dpSettings,
        recovery: meanCi(ratios),
        aligned: meanCi(cs.map((c) => c.aligned)), sft: meanCi(cs.map((c) => c.sft)), rmAccuracy: meanCi(cs.map((c) => c.rmAccuracy ?? NaN)),
        rougeL: { sft: meanCi(cs.map((c) => c.rougeL?.sft ?? NaN)), aligned: meanCi(cs.map((c) => c.rougeL?.aligned ?? NaN)) },
        meanWallS: cs.reduce((a, c) => a + c.wallS, 0) / cs.length,
      };
    }),
  };
}

const columnKey = (c: SweepCell) => `${c.epsilon}/${c.dpSettings ? 1 : 0}`;

const pm = (x: { mean: number; ci95: number }) => (!Number.isFinite(x.mean) ? "-" : Number.isFinite(x.ci95) ? `${x.mean.toFixed(2)} +- ${x.ci95.toFixed(2)}` : x.mean.toFixed(2));

export function renderTable(t: Table, model: string): string {
  const head = ["model", "eps=0", ...t.columns.map((c) => `eps=${c.label}`)];
  const L = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  const has = (k: "aligned" | "sft" | "rmAccuracy") => t.columns.some((c) => Number.isFinite(c[k].mean));
  const pct = (x: { mean: number; ci95: number }) => pm({ mean: 100 * x.mean, ci95: 100 * x.ci95 });
  if (has("aligned")) L.push(`| ${model} (aligned) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.aligned)).join(" | ")} |`);
  if (has("sft")) L.push(`| ${model} (SFT only) | ${pm(t.pretrained)} | ${t.columns.map((c) => pm(c.sft)).join(" | ")} |`);
  const likeForLike = t.columns.some((c) => c.dpSettings);
  const hasRecovery = t.columns.some((c) => Number.isFinite(c.recovery.mean));
  const isRef = (c: TableColumn) => c.epsilon === Infinity && c.dpSettings === likeForLike;
  if (hasRecovery) L.push(`| recovery of the non-private gain (%) | 0 | ${t.columns.map((c) => (isRef(c) ? "100 (reference)" : pct(c.recovery))).join(" | ")} |`);
  if (has("rmAccuracy")) L.push(`| reward model held-out accuracy (%) | - | ${t.columns.map((c) => pct(c.rmAccuracy)).join(" | ")} |`);
  if (t.columns.some((c) => Number.isFinite(c.rougeL.aligned.mean))) {
    L.push(`| ${model} (aligned) ROUGE-L | ${pm(t.pretrained.rougeL)} | ${t.columns.map((c) => pm(c.rougeL.aligned)).join(" | ")} |`);
    L.push(`| ${model} (SFT only) ROUGE-L | ${pm(t.pretrained.rougeL)} | ${t.columns.map((c) => pm(c.rougeL.sft)).join(" | ")} |`);
  }
  L.push(`| seeds | ${t.pretrained.seeds} | ${t.columns.map((c) => c.seeds).join(" | ")} |`);
  L.push(`| mean wall time per run (s) | - | ${t.columns.map((c) => c.meanWallS.toFixed(0)).join(" | ")} |`);
  const notes: string[] = [];
  if (has("aligned")) notes.push("Mean reward (positive-class logit of the public classifier, the gold labeller) of completions of held-out prompts; eps=0 is the pretrained model.");
  if (t.columns.some((c) => c.dpSettings)) notes.push("eps=inf (DP settings): non-private, with the DP columns' data, batches, steps and learning rate (no noise, no per-example clipping); eps=inf: the non-private recipe of the config's `nonPrivate` section.");
  if (hasRecovery) notes.push(`Recovery: per seed, (aligned - pretrained) / (${likeForLike ? "eps=inf (DP settings)" : "eps=inf"} aligned - pretrained); the paper's GPT-2 recovers 89% at eps=4.`);
  if (has("rmAccuracy")) notes.push("Reward model accuracy: the fraction of public held-out preference pairs it orders as labelled.");
  if (t.columns.some((c) => Number.isFinite(c.rougeL.aligned.mean))) notes.push("ROUGE-L: F1 x 100 against the held-out reviews' real continuations (rouge-score conventions).");
  notes.push("+- is the 95% CI over seeds (Student t).");
  return L.join("\n") + "\n\n" + notes.join(" ") + "\n";
}
