/**
 * The pure resolve step: from a validated config and the data sizes, the derived sizes of every
 * stage (N, q = batch/N, steps), delta, and sigma calibrated per stage for the target
 * (epsilon, delta) before any training (DESIGN.md rule 5). Inconsistent values are rejected with
 * an explanation.
 */
import { ConfigError } from "../util/errors.js";
import { reuseMechanism } from "../privacy/index.js";
import { effectiveStages, type Config } from "./config.js";

/** Sizes of the IMDb splits, for planning before the data is read. */
export const IMDB_SIZES = { train: 25000, test: 25000, unsup: 50000 } as const;

/** What the plan needs from the privacy accountants (ts/privacy). */
export interface Calibrator {
  /** Smallest noise multiplier with epsilon(q, sigma, steps, delta) <= epsilon. */
  calibrateSigma(o: { q: number; steps: number; epsilon: number; delta: number; accountant: "prv" | "rdp" }): number;
  /** epsilon of `steps` sampled Gaussians with rate q and noise multiplier sigma. */
  epsilon(o: { q: number; steps: number; sigma: number; delta: number; accountant: "prv" | "rdp" }): number;
  /** Accounted noise multipliers, one per stage, whose sequential composition meets epsilon. */
  splitSequential(o: { stages: { q: number; steps: number }[]; epsilon: number; delta: number; accountant: "prv" | "rdp" }): number[];
  /** epsilon of the sequential composition of the stages' mechanisms (one user in every stage). */
  composeSequential(o: { stages: { q: number; steps: number; sigma: number }[]; delta: number; accountant: "prv" | "rdp" }): number;
}

export type StageId = "sft" | "rm" | "ppo";

export interface StagePlan {
  stage: StageId;
  dp: boolean;
  /** Examples in this stage's private part (|D1| or |D3|). */
  datasetSize: number;
  /** Expected logical batch (DP: q*N) or the fixed mini-batch (non-private). */
  batchSize: number;
  /** Poisson sampling rate (DP); batch/N for reference otherwise. */
  q: number;
  /** Sampled batches: accounted sampled-Gaussian steps in DP mode. */
  sampledBatches: number;
  /** T_PPO (1 for SFT): noisy steps on each sampled batch. */
  reuse: number;
  /** Optimizer steps actually taken = sampledBatches * reuse. */
  optimizerSteps: number;
  /** Noise multiplier of each noisy step (sigma_eff * sqrt(K)); 0 when non-private. */
  sigma: number;
  /** The mechanism accounted: one sampled Gaussian per batch with sigma / sqrt(K). */
  sigmaEffective: number;
  maxGradNorm: number;
  epsilonTarget: number;
  /** epsilon of the planned mechanism (<= target). */
  epsilonPlanned: number;
  delta: number;
}

export interface RunPlan {
  dp: boolean;
  epsilon: number;
  delta: number;
  /** How delta was chosen: the safe default min(1/|D|^1.1, 1e-6), the paper's 1/|D|, or given. */
  deltaRule: "default" | "1/n" | "given";
  /** Reproducible mode: sampling and noise follow the public seed, so the run is not private. */
  reproducible: boolean;
  accountant: "prv" | "rdp";
  /** How the stages compose: disjoint D1 / D3 (parallel) or one user in both (sequential). */
  composition: "parallel" | "sequential";
  sizes: { privateD: number; d1: number; d2: number; d3: number; publicCorpus: number; classifierTrain: number; classifierHeldOut: number; evalPrompts: number; rmHeldOut: number };
  /** SFT on D1 (absent in scenario reward-model). */
  sft?: StagePlan;
  /** The DP reward model on D2 (scenarios rlhf and reward-model). */
  rm?: StagePlan;
  /** PPO on D3 (absent in scenario reward-model). */
  ppo?: StagePlan & { rolloutBatch: number; miniBatchesPerRollout: number };
  /** Parallel: the max over stages (disjoint D1 / D3); sequential: their numerical composition. */
  composed: { epsilon: number; delta: number; rule: string };
  notes: string[];
}

export interface DataSizes {
  train: number;
  test: number;
  unsup: number;
  /** Preference pairs in data.preferences.file (scenario reward-model). */
  pairs?: number;
}

/**
 * D1 and D3 are disjoint slices of D in DP runs with parallel composition, and in non-private runs
 * that ask for it (nonPrivate.disjointStages: a sweep's like-for-like eps = inf column).
 */
export function disjointStages(cfg: Config): boolean {
  const split = Number.isFinite(cfg.privacy.epsilon) || cfg.nonPrivate.disjointStages;
  return split && cfg.privacy.composition === "parallel";
}

/** The stages a run trains, in order. */
export function stagesOf(p: Pick<RunPlan, "sft" | "rm" | "ppo">): StagePlan[] {
  return [p.sft, p.rm, p.ppo].filter((x): x is StagePlan => x !== undefined);
}

function resolveSizes(cfg: Config, disjoint: boolean, avail: DataSizes): RunPlan["sizes"] {
  const d = cfg.data;
  const rlhf = cfg.scenario === "rlhf";
  const tldr = d.source === "tldr";
  if (tldr && d.privateSize === "all") throw new ConfigError("data.privateSize: give the planned number of private TL;DR records (posts and comparisons) for data.source tldr");
  const privateD = d.privateSize === "all" ? avail.train : d.privateSize;
  if (!tldr && privateD > avail.train) throw new ConfigError(`data.privateSize: ${privateD} exceeds the ${avail.train} train reviews`);
  const rmHeldOut = rlhf ? d.rmHeldOut : 0;
  const testNeeded = d.classifierTrain + d.classifierHeldOut + d.evalPrompts + rmHeldOut + d.lmHeldOut;
  if (!tldr && testNeeded > avail.test) {
    throw new ConfigError(`data.classifierTrain + data.classifierHeldOut + data.evalPrompts${rlhf ? " + data.rmHeldOut" : ""}${d.lmHeldOut ? " + data.lmHeldOut" : ""} = ${testNeeded} exceeds the ${avail.test} test reviews`);
  }
  // The held-out unsup reviews are never in the corpus ("all" is every other one).
  const publicCorpus = d.pretrainDocs === "all" ? avail.unsup - d.pretrainHeldOut : d.pretrainDocs;
  if (!tldr && publicCorpus + d.pretrainHeldOut > avail.unsup) throw new ConfigError(`data.pretrainDocs${d.pretrainHeldOut ? " + data.pretrainHeldOut" : ""}: ${publicCorpus + d.pretrainHeldOut} exceeds the ${avail.unsup} unsup reviews`);
  // Planned sizes (the realised ones follow the per-record keyed split and are private).
  const d1 = disjoint ? Math.round(privateD * d.sftFraction) : privateD;
  const d2 = !rlhf ? 0 : disjoint ? Math.round(privateD * d.rmFraction) : privateD;
  const d3 = disjoint ? privateD - d1 - d2 : privateD;
  if (d1 < 1 || d3 < 1 || (rlhf && d2 < 1)) throw new ConfigError(`data.sftFraction${rlhf ? " / data.rmFraction" : ""}: ${privateD} records leave an empty D1, D2 or D3`);
  return { privateD, d1, d2, d3, publicCorpus, classifierTrain: d.classifierTrain, classifierHeldOut: d.classifierHeldOut, evalPrompts: d.evalPrompts, rmHeldOut };
}

/** delta from the config: null is the safe default min(1/|D|^1.1, 1e-6); "1/n" is the paper's 1/|D|. */
export function resolveDelta(given: number | "1/n" | null, n: number): { delta: number; deltaRule: RunPlan["deltaRule"] } {
  if (given === "1/n") return { delta: 1 / n, deltaRule: "1/n" };
  if (given === null) return { delta: Math.min(n ** -1.1, 1e-6), deltaRule: "default" };
  return { delta: given, deltaRule: "given" };
}

function dpStage(
  stage: StageId, n: number, batch: number, epochs: number, reuse: number, maxGradNorm: number,
  eps: number, delta: number, accountant: "prv" | "rdp", cal: Calibrator, field: string, givenSigma?: number,
): StagePlan {
  if (batch > n) throw new ConfigError(`${field}: expected batch ${batch} exceeds the ${n} examples of the stage's data; lower it or raise data.privateSize`);
  const q = batch / n;
  const sampledBatches = Math.ceil(epochs / q);
  const sigmaEffective = givenSigma ?? cal.calibrateSigma({ q, steps: sampledBatches, epsilon: eps, delta, accountant });
  const epsilonPlanned = cal.epsilon({ q, steps: sampledBatches, sigma: sigmaEffective, delta, accountant });
  // T_PPO = K noisy steps on one sub-sample are one sampled Gaussian with sigma / sqrt(K): run sigma_eff * sqrt(K).
  const sigma = sigmaEffective * Math.sqrt(reuse);
  if (Math.abs(reuseMechanism(sigma, reuse) - sigmaEffective) > 1e-9 * sigmaEffective) throw new RangeError("reuse accounting mismatch");
  return {
    stage, dp: true, datasetSize: n, batchSize: batch, q, sampledBatches, reuse,
    optimizerSteps: sampledBatches * reuse, sigma, sigmaEffective, maxGradNorm,
    epsilonTarget: eps, epsilonPlanned, delta,
  };
}

/** The plan of scenario reward-model: one DP stage on the private preference pairs. */
function planRewardModel(cfg: Config, cal: Calibrator, avail: DataSizes): RunPlan {
  const eps = cfg.privacy.epsilon;
  const dp = Number.isFinite(eps);
  const pool = avail.pairs ?? 0;
  const held = cfg.data.preferences.heldOut;
  if (held >= pool) throw new ConfigError(`data.preferences.heldOut: ${held} leaves no private pairs of the ${pool} in ${cfg.data.preferences.file}`);
  const privateD = cfg.data.privateSize === "all" ? pool - held : cfg.data.privateSize;
  if (privateD > pool - held) throw new ConfigError(`data.privateSize: ${privateD} exceeds the ${pool - held} pairs left after data.preferences.heldOut`);
  const { delta, deltaRule } = resolveDelta(cfg.privacy.delta, privateD);
  const { rm } = effectiveStages(cfg);
  const accountant = cfg.privacy.accountant;
  const sizes = { privateD, d1: 0, d2: privateD, d3: 0, publicCorpus: cfg.data.pretrainDocs === "all" ? avail.unsup - cfg.data.pretrainHeldOut : cfg.data.pretrainDocs, classifierTrain: 0, classifierHeldOut: 0, evalPrompts: 0, rmHeldOut: held };
  const notes: string[] = [];
  if (deltaRule === "1/n") notes.push(`delta = 1/|D| = ${delta.toExponential(3)} as in the paper; the default min(1/|D|^1.1, 1e-6) is safer`);
  if (cfg.privacy.reproducible && dp) notes.push("privacy.reproducible: sampling and noise follow the public seed; this run is NOT differentially private (epsilon inf)");
  let rmPlan: StagePlan;
  if (dp) {
    rmPlan = dpStage("rm", privateD, rm.batchSize, rm.epochs, 1, rm.maxGradNorm, eps, delta, accountant, cal, "rm.batchSize");
  } else {
    if (rm.batchSize > privateD) throw new ConfigError(`rm.batchSize: ${rm.batchSize} exceeds |D2| = ${privateD}`);
    const batches = Math.ceil((rm.epochs * privateD) / rm.batchSize);
    rmPlan = { stage: "rm", dp: false, datasetSize: privateD, batchSize: rm.batchSize, q: rm.batchSize / privateD, sampledBatches: batches, reuse: 1, optimizerSteps: batches, sigma: 0, sigmaEffective: 0, maxGradNorm: rm.maxGradNorm, epsilonTarget: Infinity, epsilonPlanned: Infinity, delta };
  }
  return {
    dp, epsilon: eps, delta, deltaRule, reproducible: cfg.privacy.reproducible, accountant, composition: "parallel", sizes, rm: rmPlan,
    composed: { epsilon: rmPlan.epsilonPlanned, delta, rule: dp ? "one DP stage (the reward model on the private pairs)" : "non-private" },
    notes,
  };
}

/** Resolves the plan of a run. Pure: the calibrator is injected. */
export function planRun(cfg: Config, cal: Calibrator, avail: DataSizes = IMDB_SIZES): RunPlan {
  if (cfg.scenario === "reward-model") return planRewardModel(cfg, cal, avail);
  const eps = cfg.privacy.epsilon;
  const dp = Number.isFinite(eps);
  const composition = cfg.privacy.composition;
  const sizes = resolveSizes(cfg, disjointStages(cfg), avail);
  const { delta, deltaRule } = resolveDelta(cfg.privacy.delta, sizes.privateD);
  const notes: string[] = [];
  if (deltaRule === "1/n") notes.push(`delta = 1/|D| = ${delta.toExponential(3)} as in the paper; the default min(1/|D|^1.1, 1e-6) is safer`);
  const reproducible = cfg.privacy.reproducible;
  if (reproducible && dp) notes.push("privacy.reproducible: sampling, the stage split and the noise follow the public seed; this run is NOT differentially private (epsilon inf)");
  const { sft, rm, ppo } = effectiveStages(cfg);
  const accountant = cfg.privacy.accountant;

  if (ppo.batchSize % ppo.miniBatchSize !== 0) {
    throw new ConfigError(`ppo.batchSize (${ppo.batchSize}) must be a multiple of ppo.miniBatchSize (${ppo.miniBatchSize}): each rollout batch is cut into whole mini-batches`);
  }
  const miniBatchesPerRollout = ppo.batchSize / ppo.miniBatchSize;

  if (dp) {
    if (ppo.klControl === "adaptive") throw new ConfigError("ppo.klControl: \"adaptive\" couples examples through the batch KL and is refused in DP mode (DESIGN.md rule 2); use \"fixed\"");
    if (ppo.whitenAdvantages === "batch") throw new ConfigError("ppo.whitenAdvantages: \"batch\" couples examples and is refused in DP mode; use \"none\" or \"per_example\"");
    if (ppo.rewardNormalization === "batch") throw new ConfigError("ppo.rewardNormalization: \"batch\" couples examples and is refused in DP mode; use \"none\" or \"fixed\"");
    const rlhf = cfg.scenario === "rlhf";
    let sigmas: number[] | undefined;
    if (composition === "sequential") {
      // One user may be in every stage: split the budget so the composition of all meets it.
      const mech = (batch: number, n: number, epochs: number, field: string) => {
        if (batch > n) throw new ConfigError(`${field}: expected batch ${batch} exceeds the ${n} examples of the stage's data; lower it or raise data.privateSize`);
        return { q: batch / n, steps: Math.ceil(epochs / (batch / n)) };
      };
      sigmas = cal.splitSequential({
        stages: [
          mech(sft.batchSize, sizes.d1, sft.epochs, "sft.batchSize"),
          ...(rlhf ? [mech(rm.batchSize, sizes.d2, rm.epochs, "rm.batchSize")] : []),
          mech(ppo.miniBatchSize, sizes.d3, ppo.epochs, "ppo.miniBatchSize"),
        ],
        epsilon: eps, delta, accountant,
      });
    }
    const sftPlan = dpStage("sft", sizes.d1, sft.batchSize, sft.epochs, 1, sft.maxGradNorm, eps, delta, accountant, cal, "sft.batchSize", sigmas?.[0]);
    const rmPlan = rlhf ? dpStage("rm", sizes.d2, rm.batchSize, rm.epochs, 1, rm.maxGradNorm, eps, delta, accountant, cal, "rm.batchSize", sigmas?.[1]) : undefined;
    const ppoPlan = dpStage("ppo", sizes.d3, ppo.miniBatchSize, ppo.epochs, ppo.ppoEpochs, ppo.maxGradNorm, eps, delta, accountant, cal, "ppo.miniBatchSize", sigmas?.at(-1));
    const all = rmPlan ? [sftPlan, rmPlan, ppoPlan] : [sftPlan, ppoPlan];
    if (ppo.ppoEpochs > 1) notes.push(`T_PPO = ${ppo.ppoEpochs}: each sampled mini-batch takes ${ppo.ppoEpochs} noisy steps, accounted as one sampled Gaussian with sigma/sqrt(${ppo.ppoEpochs})`);
    let composed: RunPlan["composed"];
    if (composition === "sequential") {
      // Each stage's share of the budget is its own planned epsilon: the run guard holds every
      // stage to it, which keeps the composition at or below the target.
      for (const st of all) st.epsilonTarget = st.epsilonPlanned;
      const total = cal.composeSequential({ stages: all.map((st) => ({ q: st.q, steps: st.sampledBatches, sigma: st.sigmaEffective })), delta, accountant });
      if (total > eps * (1 + 1e-9)) throw new RangeError(`budget split composes to ${total} > ${eps}`);
      composed = { epsilon: total, delta, rule: "sequential composition: a user may appear in every stage (each stage uses all of D), so the stages' mechanisms are composed numerically" };
      notes.push(`sequential composition: the budget is split between ${all.map((st) => `${st.stage.toUpperCase()} (eps ${st.epsilonPlanned.toPrecision(4)} alone)`).join(", ")}`);
    } else {
      composed = {
        epsilon: Math.max(...all.map((st) => st.epsilonPlanned)), delta,
        rule: `parallel composition: ${rlhf ? "D1, D2 and D3 are" : "D1 and D3 are"} disjoint per record, so the pipeline is (max eps, delta)-DP`,
      };
    }
    return {
      dp, epsilon: eps, delta, deltaRule, reproducible, accountant, composition, sizes,
      sft: sftPlan,
      ...(rmPlan ? { rm: rmPlan } : {}),
      ppo: { ...ppoPlan, rolloutBatch: ppo.batchSize, miniBatchesPerRollout },
      composed,
      notes,
    };
  }

  if (sft.batchSize > sizes.d1) throw new ConfigError(`sft.batchSize: ${sft.batchSize} exceeds |D1| = ${sizes.d1}`);
  if (ppo.batchSize > sizes.d3) throw new ConfigError(`ppo.batchSize: ${ppo.batchSize} exceeds |D3| = ${sizes.d3}`);
  if (cfg.scenario === "rlhf" && rm.batchSize > sizes.d2) throw new ConfigError(`rm.batchSize: ${rm.batchSize} exceeds |D2| = ${sizes.d2}`);
  const rmBatches = Math.ceil((rm.epochs * sizes.d2) / rm.batchSize);
  const sftBatches = Math.ceil((sft.epochs * sizes.d1) / sft.batchSize);
  const rollouts = Math.ceil((ppo.epochs * sizes.d3) / ppo.batchSize);
  const common = { dp: false, sigma: 0, sigmaEffective: 0, epsilonTarget: Infinity, epsilonPlanned: Infinity, delta };
  notes.push(`non-private run (epsilon = inf): ${cfg.scenario === "rlhf" ? "D1 = D2 = D3" : "D1 = D3"} = all of D, as in the paper`);
  return {
    dp, epsilon: eps, delta, deltaRule, reproducible, accountant, composition, sizes,
    sft: { ...common, stage: "sft", datasetSize: sizes.d1, batchSize: sft.batchSize, q: sft.batchSize / sizes.d1, sampledBatches: sftBatches, reuse: 1, optimizerSteps: sftBatches, maxGradNorm: sft.maxGradNorm },
    ...(cfg.scenario === "rlhf"
      ? { rm: { ...common, stage: "rm" as const, datasetSize: sizes.d2, batchSize: rm.batchSize, q: rm.batchSize / sizes.d2, sampledBatches: rmBatches, reuse: 1, optimizerSteps: rmBatches, maxGradNorm: rm.maxGradNorm } }
      : {}),
    ppo: {
      ...common, stage: "ppo", datasetSize: sizes.d3, batchSize: ppo.miniBatchSize, q: ppo.miniBatchSize / sizes.d3,
      sampledBatches: rollouts * miniBatchesPerRollout, reuse: ppo.ppoEpochs,
      optimizerSteps: rollouts * miniBatchesPerRollout * ppo.ppoEpochs, maxGradNorm: ppo.maxGradNorm,
      rolloutBatch: ppo.batchSize, miniBatchesPerRollout,
    },
    composed: { epsilon: Infinity, delta, rule: "non-private" },
    notes,
  };
}

const fmt = (x: number, d = 4) => (Number.isFinite(x) ? Number(x.toPrecision(d)).toString() : "inf");

/** Human-readable plan, printed by `dpalign run --dry-run`. */
export function formatPlan(p: RunPlan): string {
  const lines: string[] = [];
  const deltaNote = { default: " (min(1/|D|^1.1, 1e-6))", "1/n": " (1/|D|)", given: "" }[p.deltaRule];
  if (p.reproducible && p.dp) lines.push("NOT PRIVATE: privacy.reproducible is set; the mechanism below is calibrated, but its samples and noise can be recomputed from the seed");
  lines.push(`privacy: epsilon ${fmt(p.epsilon)}, delta ${p.delta.toExponential(3)}${deltaNote}, accountant ${p.accountant}`);
  const s = p.sizes;
  // Planned sizes come from the config; the realised sizes of D1 / D3 are private (per-record assignment).
  lines.push(
    !p.sft
      ? `data (planned): |D| ${s.privateD} private preference pairs, ${s.rmHeldOut} public held-out pairs, public corpus ${s.publicCorpus}`
      : `data (planned): |D| ${s.privateD}, |D1| ${s.d1} (SFT), ${p.rm ? `|D2| ${s.d2} (reward-model pairs), ` : ""}|D3| ${s.d3} (PPO prompts), public corpus ${s.publicCorpus}, classifier ${s.classifierTrain} train / ${s.classifierHeldOut} held-out, eval prompts ${s.evalPrompts}${p.rm ? `, reward-model held-out ${s.rmHeldOut}` : ""}`,
  );
  for (const st of stagesOf(p)) {
    const head = `${st.stage.toUpperCase()}: N ${st.datasetSize}, ${st.dp ? "expected batch" : "batch"} ${st.batchSize}, q ${fmt(st.q)}, batches ${st.sampledBatches}, T_reuse ${st.reuse}, optimizer steps ${st.optimizerSteps}`;
    lines.push(st.dp ? `${head}, sigma ${fmt(st.sigma)} (accounted ${fmt(st.sigmaEffective)}), C ${st.maxGradNorm}, planned eps ${fmt(st.epsilonPlanned)}` : `${head}, non-private`);
  }
  lines.push(`composed: epsilon ${fmt(p.composed.epsilon)}, delta ${p.composed.delta.toExponential(3)} (${p.composed.rule})`);
  for (const n of p.notes) lines.push(`note: ${n}`);
  return lines.join("\n");
}
