import { statSync } from "node:fs";
import type { Argv } from "yargs";
import { InvalidArgumentError } from "../../util/errors.js";
import {
  BudgetGuard,
  calibrateSigma,
  type Composed,
  compose,
  DEFAULT_RDP_ORDERS,
  epsilon,
  PrivacyLedger,
  type PrivacyPlan,
  readPlanFile,
  resolveAccountant,
  reuseMechanism,
  splitBudget,
  stageMechanism,
  validateDelta,
  validateMechanism,
} from "../../privacy/index.js";
import { NUMERICAL_EPSILON_MAX } from "../../privacy/epsilon.js";
import { LIMITS, validateEpsilon, validateReuse } from "../../privacy/types.js";

const ACCOUNTANT_HELP = "accountant: prv|pld (tight numerical accountant; the same computation) or rdp";

function out(json: boolean, obj: Record<string, unknown>, human: string): void {
  process.stdout.write(json ? JSON.stringify(obj) + "\n" : human + "\n");
}

function fmt(x: number): string {
  return Number.isFinite(x) ? (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(6).replace(/0+$/, "").replace(/\.$/, "") : x.toExponential(4)) : String(x);
}

/**
 * A numeric flag. The flags are declared without a yargs type so that a value like "inf" reaches
 * here as written (yargs's number type turns it into NaN); yargs still parses numeric text.
 */
function num(v: unknown, field: string): number {
  if (v === undefined) throw new InvalidArgumentError(field, "is required");
  if (Array.isArray(v)) throw new InvalidArgumentError(field, "give it once");
  if (typeof v === "number") return v;
  const text = String(v).trim();
  if (/^[+]?(inf|infinity)$/i.test(text)) return Infinity;
  const n = text === "" || typeof v === "boolean" ? NaN : Number(text);
  if (Number.isNaN(n)) throw new InvalidArgumentError(field, `must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** A numeric flag's yargs declaration: untyped (see num), one value, described with its range. */
function numeric(describe: string, extra: { demandOption?: boolean; default?: number } = {}) {
  return { requiresArg: true, describe, ...extra } as const;
}

/** --ledger must name an existing file: a missing one would otherwise read as an empty ledger (epsilon 0). */
function ledgerFile(path: string): string {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new InvalidArgumentError("ledger", `${path}: no such file; give the ledger.jsonl of a run directory`);
  }
  if (!st.isFile()) throw new InvalidArgumentError("ledger", `${path} is not a file; give the ledger.jsonl of a run directory`);
  return path;
}

const STEPS_HELP = `number of noisy steps (integer in [1, ${LIMITS.stepsMax}])`;
const STEPS0_HELP = `number of noisy steps (integer in [0, ${LIMITS.stepsMax}])`;
const SIGMA_HELP = `noise std / clipping norm, in [${LIMITS.sigmaMin}, ${LIMITS.sigmaMax}]`;
const DELTA_HELP = `delta in [${LIMITS.deltaMin}, ${LIMITS.deltaMax}]`;
const EPS_HELP = `target epsilon in (0, ${LIMITS.epsilonMax}]`;
const REUSE_HELP = `noisy steps per sampled batch (T_PPO = K), integer in [1, ${LIMITS.reuseMax}]: accounted as sigma/sqrt(K)`;

function orders(v: unknown): number[] | undefined {
  if (v === undefined) return undefined;
  const list = (Array.isArray(v) ? v : [v]).flatMap((x) => String(x).split(",")).map((x) => Number(x));
  if (list.length === 0 || list.some((a) => !(a > 1))) throw new InvalidArgumentError("orders", "RDP orders must be numbers > 1");
  return list;
}

function composedHuman(r: Composed, mode: string, target?: number): string {
  const lines = r.perStage.map((s) => `  ${s.stage.padEnd(12)} epsilon ${fmt(s.epsilon)}${s.error ? ` (± ${fmt(s.error)})` : ""}`);
  const verdict = target === undefined ? "" : r.epsilon <= target ? `\nwithin the target epsilon ${target}` : `\nEXCEEDS the target epsilon ${target}`;
  return `${mode} composition: epsilon ${fmt(r.epsilon)}${r.error ? ` (± ${fmt(r.error)})` : ""} at delta ${r.delta} [${r.accountant}]\n${lines.join("\n")}${verdict}`;
}

export function register(cli: Argv): Argv {
  return cli.command("privacy", "Privacy accounting: epsilon, noise calibration, composition of plans and ledgers", (y) =>
    y
      .command(
        "epsilon",
        "Epsilon of a Poisson-subsampled Gaussian mechanism run for some steps",
        (a) =>
          a
            .option("sample-rate", numeric("Poisson sample rate q in (0, 1] (1: plain Gaussian)", { demandOption: true }))
            .option("noise-multiplier", numeric(SIGMA_HELP, { demandOption: true }))
            .option("steps", numeric(STEPS0_HELP, { demandOption: true }))
            .option("delta", numeric(DELTA_HELP, { demandOption: true }))
            .option("reuse", numeric(REUSE_HELP, { default: 1 }))
            .option("accountant", { type: "string", default: "prv", describe: ACCOUNTANT_HELP })
            .option("orders", { type: "string", describe: "RDP orders, comma-separated (default: Opacus's)" })
            .option("json", { type: "boolean", default: false, describe: "print one JSON object" }),
        (args) => {
          const accountant = resolveAccountant(args.accountant);
          const m = { q: num(args.sampleRate, "sample-rate"), sigma: num(args.noiseMultiplier, "noise-multiplier"), steps: num(args.steps, "steps") };
          validateMechanism(m);
          const delta = num(args.delta, "delta");
          validateDelta(delta);
          const reuse = num(args.reuse, "reuse");
          const sigma = reuseMechanism(m.sigma, reuse);
          const r = epsilon({ mechanisms: [{ ...m, sigma }], delta, accountant, options: { orders: orders(args.orders) ?? DEFAULT_RDP_ORDERS } });
          const fallback = accountant !== "rdp" && r.accountant === "rdp" ? ` (the RDP bound: above ${NUMERICAL_EPSILON_MAX} the numerical accountant is not run; no meaningful privacy)` : "";
          out(
            args.json,
            { epsilon: r.epsilon, error: r.error, delta: r.delta, accountant: r.accountant, sample_rate: m.q, noise_multiplier: m.sigma, steps: m.steps, reuse, ...(r.bestOrder !== undefined ? { best_order: r.bestOrder } : {}) },
            `epsilon ${fmt(r.epsilon)}${fallback || (accountant === "rdp" ? ` (best order ${r.bestOrder})` : ` (estimated error ${fmt(r.error)}; an upper bound)`)} at delta ${r.delta} for q ${m.q}, sigma ${m.sigma}, ${m.steps} steps [${r.accountant}]`,
          );
        },
      )
      .command(
        "calibrate",
        "Smallest noise multiplier whose epsilon stays at or below a target",
        (a) =>
          a
            .option("sample-rate", numeric("Poisson sample rate q in (0, 1]", { demandOption: true }))
            .option("steps", numeric(STEPS_HELP, { demandOption: true }))
            .option("target-epsilon", numeric(EPS_HELP, { demandOption: true }))
            .option("delta", numeric(DELTA_HELP, { demandOption: true }))
            .option("reuse", numeric(REUSE_HELP, { default: 1 }))
            .option("accountant", { type: "string", default: "prv", describe: ACCOUNTANT_HELP })
            .option("json", { type: "boolean", default: false, describe: "print one JSON object" }),
        (args) => {
          const accountant = resolveAccountant(args.accountant);
          const q = num(args.sampleRate, "sample-rate");
          const steps = num(args.steps, "steps");
          validateMechanism({ q, sigma: 1, steps });
          const targetEpsilon = num(args.targetEpsilon, "target-epsilon");
          validateEpsilon(targetEpsilon);
          const delta = num(args.delta, "delta");
          validateDelta(delta);
          const k = num(args.reuse, "reuse");
          validateReuse(k);
          const c = calibrateSigma({ q, steps, targetEpsilon, delta, accountant });
          const sigma = c.sigma * Math.sqrt(k);
          const floor = c.sigma <= LIMITS.sigmaMin ? ` (the smallest noise multiplier accepted, ${LIMITS.sigmaMin}, already meets the target)` : "";
          out(
            args.json,
            { noise_multiplier: sigma, epsilon: c.result.epsilon, error: c.result.error, target_epsilon: targetEpsilon, delta, accountant, sample_rate: q, steps, reuse: k },
            `noise multiplier ${fmt(sigma)} gives epsilon ${fmt(c.result.epsilon)} <= ${targetEpsilon} at delta ${delta} for q ${q}, ${steps} steps${k > 1 ? `, reuse ${k}` : ""} [${accountant}]${floor}`,
          );
        },
      )
      .command(
        "compose",
        "Compose the stages of a plan file and/or the mechanisms recorded in a ledger",
        (a) =>
          a
            .option("ledger", { type: "string", describe: "privacy ledger (JSON lines) of executed mechanisms" })
            .option("plan", { type: "string", describe: "plan file (JSON or YAML): target_epsilon, delta, composition, stages" })
            .option("composition", { type: "string", choices: ["parallel", "sequential"], describe: "disjoint data (parallel) or one user in every stage (sequential)" })
            .option("delta", numeric(`${DELTA_HELP} (default: the plan's)`))
            .option("target-epsilon", numeric(`${EPS_HELP} to check against (default: the plan's)`))
            .option("accountant", { type: "string", describe: ACCOUNTANT_HELP })
            .option("json", { type: "boolean", default: false, describe: "print one JSON object" })
            .check((a2) => {
              if (!a2.ledger && !a2.plan) throw new InvalidArgumentError("compose", "give --ledger FILE and/or --plan FILE");
              return true;
            }),
        (args) => {
          if (args.ledger) ledgerFile(args.ledger);
          const plan: PrivacyPlan | undefined = args.plan ? readPlanFile(args.plan) : undefined;
          const accountant = resolveAccountant(args.accountant ?? plan?.accountant ?? "prv");
          const mode = (args.composition ?? plan?.composition ?? "sequential") as "parallel" | "sequential";
          const delta = args.delta !== undefined ? num(args.delta, "delta") : plan?.delta;
          if (delta === undefined) throw new InvalidArgumentError("delta", "is required without a plan file");
          validateDelta(delta);
          const target = args.targetEpsilon !== undefined ? num(args.targetEpsilon, "target-epsilon") : plan?.targetEpsilon;
          if (target !== undefined) validateEpsilon(target);
          const result: Record<string, unknown> = {};
          const human: string[] = [];
          if (plan) {
            let stages = plan.stages;
            if (stages.some((s) => s.sigma === undefined)) {
              if (target === undefined) throw new InvalidArgumentError("target-epsilon", "is required to calibrate stages without a noise multiplier");
              stages = splitBudget({ targetEpsilon: target, delta, composition: mode, stages, accountant }).stages;
            }
            const guard = target !== undefined ? new BudgetGuard({ targetEpsilon: target, delta, composition: mode, accountant }) : undefined;
            const r = compose(mode, stages.map((s) => ({ stage: s.stage, mechanisms: [stageMechanism(s)] })), delta, accountant);
            Object.assign(result, { epsilon: r.epsilon, error: r.error, delta, accountant, composition: mode, target_epsilon: target, within_target: guard ? r.epsilon <= target! : undefined });
            result.plan = { stages: stages.map((s, i) => ({ ...s, noise_multiplier: s.sigma, epsilon: r.perStage[i]?.epsilon })) };
            human.push(`plan ${args.plan}:`, composedHuman(r, mode, target));
            human.push(...stages.map((s) => `  ${s.stage}: noise multiplier ${fmt(s.sigma!)}, q ${s.q}, ${s.steps} steps${s.reuse && s.reuse > 1 ? `, reuse ${s.reuse}` : ""}`));
          }
          if (args.ledger) {
            const ledger = new PrivacyLedger(args.ledger);
            const r = ledger.compose(mode, delta, accountant);
            const ledgerResult = { epsilon: r.epsilon, error: r.error, per_stage: r.perStage, records: ledger.read().length };
            if (plan) result.ledger = ledgerResult;
            else Object.assign(result, ledgerResult, { delta, accountant, composition: mode, target_epsilon: target, within_target: target !== undefined ? r.epsilon <= target : undefined });
            human.push(`ledger ${args.ledger} (${ledgerResult.records} records):`, composedHuman(r, mode, target));
          }
          out(args.json, result, human.join("\n"));
          const eps = (result.ledger as { epsilon?: number } | undefined)?.epsilon ?? (result.epsilon as number);
          if (target !== undefined && eps > target) process.exitCode = 3;
        },
      )
      .demandCommand(1, "Name a subcommand: epsilon, calibrate or compose."),
  );
}
