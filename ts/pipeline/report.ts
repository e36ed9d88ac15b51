/** report.md of one run: plan, privacy, public reward, evaluation and samples. */
import { writeFileSync } from "node:fs";
import type { Config } from "./config.js";
import type { RunDir } from "./run-dir.js";
import type { RunSummary } from "./run.js";
import { formatPlan } from "./plan.js";
import { describeReward } from "./stages/reward.js";
import { ROUGE_DESCRIPTION } from "../eval/rouge.js";
import type { HeldOutLm } from "./stages/lm-eval.js";
import { HELD_OUT_WORDS } from "./stages/pretrain.js";
import { renderPhaseTable } from "./timing.js";

const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : x === Infinity ? "inf" : "-");

export function renderReport(cfg: Config, s: RunSummary): string {
  const L: string[] = [];
  // The first line says plainly when the run's epsilon does not hold (DESIGN.md rule 6).
  if (s.privacy.notPrivateReason && s.plan.dp) L.push(`**NOT DIFFERENTIALLY PRIVATE (epsilon = inf):** ${s.privacy.notPrivateReason}.`, "");
  L.push(`# dpalign run: ${cfg.name} (epsilon ${f(s.privacy.composed.epsilon, 2)}, seed ${cfg.seed})`, "");
  L.push(
    {
      rlhf: "RLHF (PAPER.md scenario 2's method on IMDb): a DP reward model learned on D2 from pairs labelled by a gold labeller (the public sentiment classifier), then DP-PPO against it; evaluation by the gold labeller.",
      classifier: "Scenario 1 (PAPER.md): IMDb positive continuations with a public sentiment-classifier reward.",
      "reward-model": `A DP reward model (PAPER.md Eq. 1) trained on private human preference pairs (${cfg.data.preferences.format}: ${cfg.data.preferences.file}) and measured on a public held-out slice of them.`,
    }[cfg.scenario],
    "",
  );
  if (s.rm) {
    L.push("## Reward model (public held-out pairs)", "");
    L.push(`Accuracy ${(100 * s.rm.heldOutAccuracy).toFixed(1)}% and mean Eq. 1 loss ${f(s.rm.heldOutLoss)} on ${s.rm.heldOutPairs} pairs${s.reward ? " labelled by the gold labeller" : ""}.`, "");
  }
  if (s.evals.length) {
    L.push("## Evaluation (mean reward of completions of held-out prompts, 95% CI over prompts)", "");
    const judged = s.evals.some((e) => e.evalRm);
    L.push(`| model | mean reward | 95% CI |${judged ? " evaluation RM reward |" : ""} ROUGE-1 | ROUGE-2 | ROUGE-L | prompts |`, `|---|---|---|${judged ? "---|" : ""}---|---|---|---|`);
    for (const e of s.evals) {
      const r = e.rouge;
      const j = judged ? ` ${e.evalRm ? `${f(e.evalRm.meanReward)} +- ${f(e.evalRm.ci95)}` : "-"} |` : "";
      L.push(`| ${e.model === "pretrained" ? "pretrained (eps = 0)" : e.model} | ${f(e.meanReward)} | +- ${f(e.ci95)} |${j} ${r ? f(r.rouge1, 2) : "-"} | ${r ? f(r.rouge2, 2) : "-"} | ${r ? f(r.rougeL, 2) : "-"} | ${e.n} |`);
    }
    if (s.evalRm) L.push("", `Evaluation RM: a non-private reward model used only here, trained on ${s.evalRm.trainPairs} gold-labelled pairs of the pretrained model's completions of public prefixes (never on D2; PPO may not train on it); accuracy ${(100 * s.evalRm.heldOutAccuracy).toFixed(1)}% on ${s.evalRm.heldOutPairs} public held-out pairs.`);
    if (s.evals.some((e) => e.rouge)) L.push("", `ROUGE against each held-out review's real continuation (as many tokens as the completion): ${ROUGE_DESCRIPTION}.`);
  }
  const lmRows = languageModelRows(s);
  if (lmRows.length) {
    L.push("", "## Language model on public held-out text", "");
    L.push("| model | held-out text | texts | tokens | loss (nats/token) | perplexity | per word |", "|---|---|---|---|---|---|---|");
    for (const r of lmRows) L.push(`| ${r.model} | ${r.text} | ${r.h.texts} | ${r.h.tokens} | ${f(r.h.loss)} | ${f(r.h.perplexity, 1)} | ${f(r.h.wordPerplexity, 1)} |`);
    L.push("", "Never trained on: the unsup slice is held out from pre-training and the tokenizer; the test reviews from the classifier, the evaluation prompts and every private set. The first token of each text is context, the rest are predicted.");
  }
  L.push("", CHARTS_BEGIN, CHARTS_END); // filled by ts/pipeline/plot.ts once the charts are rendered
  L.push("", "## Privacy", "");
  L.push(`Target (epsilon, delta) = (${f(s.privacy.target.epsilon, 2)}, ${s.privacy.target.delta.toExponential(3)}), accountant ${s.privacy.accountant}.`, "");
  L.push("| stage | q | sigma (per step) | sigma accounted | C | T_reuse | batches run / planned | epsilon | noise |", "|---|---|---|---|---|---|---|---|---|");
  for (const st of s.privacy.stages) {
    L.push(`| ${st.stage} | ${f(st.q, 4)} | ${f(st.sigma)} | ${f(st.sigmaAccounted)} | ${st.maxGradNorm} | ${st.reuse} | ${st.batchesExecuted} / ${st.batchesPlanned} | ${f(st.epsilon)} | ${st.noiseMode} |`);
  }
  L.push("", `Composed: epsilon ${f(s.privacy.composed.epsilon)}, delta ${s.privacy.composed.delta.toExponential(3)} (${s.privacy.composed.rule}).`);
  if (s.privacy.composed.epsilon !== s.privacy.composed.mechanismEpsilon) L.push("", `The calibrated mechanism alone would give epsilon ${f(s.privacy.composed.mechanismEpsilon)}.`);
  L.push("", "Released files carry no statistic of private batches: losses, rewards, batch sizes, norms and membership are in `private/` (keep that folder private).");
  if (s.plan.deltaRule === "1/n") L.push("", "Note: delta = 1/|D| as in the paper; the default min(1/|D|^1.1, 1e-6) is safer.");
  L.push("", "## Plan", "", "```", formatPlan(s.plan), "```", "");
  L.push("## Public models", "");
  const tokens = s.pretrain.tokensSeen ? ` (${(s.pretrain.tokensSeen / 1e6).toFixed(2)}M tokens)` : "";
  const ppl = s.pretrain.heldOut ? `; held-out perplexity ${f(s.pretrain.heldOut.perplexity, 1)}` : "";
  L.push(`- Pretrained tiny model: ${cfg.model.tiny.nLayer} layers, n_embd ${cfg.model.tiny.nEmbd}, vocab ${cfg.model.tiny.vocabSize}; ${cfg.pretrain.steps} steps of ${cfg.pretrain.batchSize} x ${cfg.pretrain.seqLen} tokens${tokens} on ${s.plan.sizes.publicCorpus} public unsup reviews; final loss ${f(s.pretrain.finalLoss)}${ppl}${s.pretrain.reused ? " (cached)" : ""}.`);
  if (s.rm && s.reward) L.push(`- DP reward model (D2): accuracy ${(100 * s.rm.heldOutAccuracy).toFixed(1)}% and Eq. 1 loss ${f(s.rm.heldOutLoss)} on ${s.rm.heldOutPairs} public held-out pairs labelled by the gold labeller.`);
  if (s.reward) L.push(`- ${cfg.scenario === "rlhf" ? "Gold labeller: the public " : "Public "}${describeReward(s.reward)}.`);
  L.push("", "## Wall time", "", `Total ${f(s.wallS, 0)} s; by stage (this invocation): ${Object.entries(s.stageWallS).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(", ")}.`);
  if (s.ppo?.timing?.length) {
    L.push("", `### Where ${s.plan.dp ? "DP-PPO" : "PPO"}'s time went (this invocation)`, "");
    L.push(...renderPhaseTable(s.ppo.timing));
    L.push("", "Worker compute is the worker's time in its handlers; transport is ZeroMQ plus the worker's decoding and queueing; encode/decode is this process's protobuf and tensor handling; control plane is TypeScript outside worker calls (sampling, GAE, accounting).");
  }
  if (s.evals.length) L.push("", "## Samples (prefix -> completion, reward)", "");
  for (const e of s.evals) {
    L.push(`### ${e.model}`, "");
    for (const sm of e.samples.slice(0, 5)) L.push(`- ${JSON.stringify(sm.prefix)} -> ${JSON.stringify(sm.completion)} (${f(sm.reward, 2)})`);
    L.push("");
  }
  return L.join("\n");
}

/** The held-out LM figures of a run: the pretrained model on unsup text, the model before and after SFT on test reviews. */
function languageModelRows(s: RunSummary): { model: string; text: string; h: HeldOutLm }[] {
  const rows: { model: string; text: string; h: HeldOutLm }[] = [];
  if (s.pretrain.heldOut) rows.push({ model: "pretrained", text: `unsup reviews, first ${HELD_OUT_WORDS} words`, h: s.pretrain.heldOut });
  const h = s.sft?.heldOut;
  if (h) {
    const text = "test reviews (private distribution), as SFT cuts them";
    rows.push({ model: "pretrained (before SFT)", text, h: h.before }, { model: "sft", text, h: h.after });
  }
  return rows;
}

export function writeReport(run: RunDir, cfg: Config, s: RunSummary): void {
  writeFileSync(run.path("report.md"), renderReport(cfg, s));
}

/** Markers around the charts section of report.md and table.md (HTML comments: invisible when empty). */
export const CHARTS_BEGIN = "<!-- dpalign:charts -->";
export const CHARTS_END = "<!-- /dpalign:charts -->";

/**
 * `markdown` with its charts section set to `charts` (links relative to the file): between the
 * markers when present, else before `before` (a heading), else at the end. Idempotent.
 */
export function embedCharts(markdown: string, charts: readonly { file: string; title: string; png?: string }[], before = "## Privacy"): string {
  const body = charts.length
    ? ["## Charts", "", ...charts.flatMap((c) => [`![${c.title}](${c.file})`, "", `${c.title}: [SVG](${c.file})${c.png ? ` · [PNG](${c.png})` : ""}`, ""])].join("\n")
    : "";
  const section = `${CHARTS_BEGIN}\n${body}${CHARTS_END}`;
  const i = markdown.indexOf(CHARTS_BEGIN);
  const j = markdown.indexOf(CHARTS_END, i);
  if (i >= 0 && j >= 0) return markdown.slice(0, i) + section + markdown.slice(j + CHARTS_END.length);
  const k = markdown.indexOf(`\n${before}\n`);
  if (k >= 0) return `${markdown.slice(0, k + 1)}${section}\n\n${markdown.slice(k + 1)}`;
  return `${markdown.replace(/\n*$/, "")}\n\n${section}\n`;
}
