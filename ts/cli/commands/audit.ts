import type { Argv } from "yargs";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BROKEN_MODES, CLIP_OFF, NOISE_DIVISOR, runAudit, validateAuditOptions, type AuditOptions, type AuditResult, type BrokenMode } from "../../audit/run.js";
import { consoleProgress } from "../../pipeline/progress.js";
import { WorkerClient } from "../../transport/client.js";
import { DpalignError, InvalidArgumentError } from "../../util/errors.js";
import { makeDir } from "../../util/fs.js";
import { WorkerApi } from "../../worker/api.js";

const f = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

function engineLine(r: AuditResult): string {
  const asked = `worker asked for sigma ${r.engine.noiseMultiplier.toPrecision(4)}, C ${r.engine.maxGradNorm}`;
  if (r.broken === "noise") return `BROKEN on purpose: noise / ${NOISE_DIVISOR} (${asked})`;
  if (r.broken === "clip") return `BROKEN on purpose: clipping off, C' = ${CLIP_OFF} C with noise std still sigma*C (${asked})`;
  return `the real engine (${asked})`;
}

export function formatAudit(r: AuditResult): string {
  const ksNote = r.ksTried.length > 1
    ? `best of ${r.ksTried.length} k values (${r.ksTried.join(", ")}), each tested at ${r.significance.toPrecision(3)} (Bonferroni)`
    : `k fixed in advance, tested at ${r.significance.toPrecision(3)}`;
  const rows: [string, string][] = [
    ["claimed epsilon", `${r.claimedEpsilon} at delta ${r.delta}`],
    ["accountant", `epsilon ${f(r.accountantEpsilon, 4)} [${r.accountant}] for sigma ${r.sigma.toPrecision(5)}, C ${r.clip}, q ${r.sampleRate}, ${r.steps} steps`],
    ["engine", engineLine(r)],
    ["canaries", `m ${r.canaries} (${r.included} included by fair CSPRNG coins), Dirac gradients of norm ${r.canaryNorm} C on a ${r.model.trainableParameters}-parameter model`],
    ["guesses", `k ${r.best.k}: ${r.best.r} guesses (top k "in", bottom k "out"), ${r.best.v} correct; ${ksNote}`],
    ["audit lower bound", `epsilon >= ${f(r.lowerBound)} at ${Math.round(100 * r.confidence)}% confidence (at most ${f(r.ceiling)} could be shown with these m and k)`],
    ["verdict", r.violation ? "VIOLATION: the empirical lower bound exceeds the claimed epsilon" : "consistent with the claim"],
    ...(r.ceiling <= r.claimedEpsilon
      ? [["note", `no outcome of these settings can exceed ${f(r.ceiling)} <= the claim, so this audit cannot show a violation; more canaries raise that ceiling only while 2 m delta (${f(2 * r.canaries * r.delta, 3)}) stays small, a smaller delta raises it too`] as [string, string]]
      : []),
    ["time", `${f(r.wallS, 1)} s`],
  ];
  return rows.map(([k, v]) => `${k.padEnd(18)} ${v}`).join("\n");
}

function jsonOf(r: AuditResult): Record<string, unknown> {
  const { scores: _scores, ...rest } = r;
  void _scores;
  return rest;
}

function num(v: unknown, field: string): number {
  const n = typeof v === "number" ? v : Number(v);
  if (v === undefined || Number.isNaN(n)) throw new InvalidArgumentError(field, `must be a number, got ${String(v)}`);
  return n;
}

export function register(cli: Argv): Argv {
  return cli.command(
    "audit",
    "Empirical lower bound on epsilon from one DP training run of the real engine with gradient canaries (Steinke, Nasr, Jagielski 2023), beside the accountant's epsilon",
    (y) =>
      y
        .option("epsilon", { type: "number", default: 4, describe: "claimed epsilon: sigma is calibrated for it" })
        .option("delta", { type: "number", default: 1e-5, describe: "claimed delta, in (0, 1)" })
        .option("canaries", { type: "number", default: 5000, describe: "number of canaries m (each included with probability 1/2)" })
        .option("steps", { type: "number", default: 10, describe: "DP-SGD steps T" })
        .option("sample-rate", { type: "number", default: 1, describe: "Poisson sample rate q in (0, 1]" })
        .option("broken", { type: "string", default: "none", describe: "none: the real engine; noise: worker gets sigma/10; clip: clipping effectively off (C' = 1000 C, noise std kept at sigma*C)" })
        .option("k", { type: "number", describe: "guess the top k and bottom k, fixed in advance (default: the best of a few k, Bonferroni-corrected)" })
        .option("accountant", { type: "string", default: "prv", describe: "accountant for the calibration: prv|pld or rdp" })
        .option("fail-on-violation", { type: "boolean", default: false, describe: "exit with status 1 when the lower bound exceeds the claimed epsilon" })
        .option("out", { type: "string", describe: "directory for audit.json and canaries.jsonl (inclusion bit and score of every canary)" })
        .option("json", { type: "boolean", default: false, describe: "print one JSON object" }),
    async (args) => {
      const broken = String(args.broken);
      if (!(BROKEN_MODES as readonly string[]).includes(broken)) throw new InvalidArgumentError("broken", `must be one of ${BROKEN_MODES.join(", ")}, got ${broken}`);
      const opts: AuditOptions = {
        epsilon: num(args.epsilon, "epsilon"), delta: num(args.delta, "delta"), canaries: num(args.canaries, "canaries"),
        steps: num(args.steps, "steps"), sampleRate: num(args.sampleRate, "sample-rate"), broken: broken as BrokenMode,
        accountant: String(args.accountant), ...(args.k !== undefined ? { k: num(args.k, "k") } : {}),
      };
      validateAuditOptions(opts); // bad flags fail before a worker starts
      const outDir = args.out === undefined ? undefined : String(args.out);
      if (outDir !== undefined) makeDir(outDir, "out");
      const progress = consoleProgress();
      progress.log(`dpalign audit: ${opts.canaries} canaries, ${opts.steps} steps at q ${opts.sampleRate}, claimed epsilon ${opts.epsilon}${broken === "none" ? "" : ` (engine broken on purpose: ${broken})`}`);
      const client = await WorkerClient.spawn();
      let r: AuditResult;
      try {
        r = await runAudit(new WorkerApi(client), { ...opts, progress });
      } finally {
        await client.close();
      }
      if (outDir !== undefined) {
        try {
          writeFileSync(join(outDir, "audit.json"), JSON.stringify(jsonOf(r), null, 2) + "\n");
          writeFileSync(join(outDir, "canaries.jsonl"), r.scores.map((s, i) => JSON.stringify({ canary: i, ...s })).join("\n") + "\n");
        } catch (e) {
          throw new DpalignError("OUTPUT_FAILED", `out: cannot write to ${outDir}: ${(e as Error).message}`);
        }
      }
      process.stdout.write((args.json ? JSON.stringify(jsonOf(r)) : formatAudit(r)) + "\n");
      if (r.violation && args.failOnViolation) process.exitCode = 1;
    },
  );
}
