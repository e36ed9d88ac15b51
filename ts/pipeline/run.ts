/**
 * One run of Scenario 1: data roles -> plan (sigma per stage) -> pretrain (cached) -> public
 * reward classifier (cached) -> DP-SFT on D1 -> DP-PPO on D3 -> evaluation -> privacy report and
 * report.md. Every stage writes a completion marker; a re-run of the same run directory skips
 * completed stages and resumes an interrupted one from its last checkpoint.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { ConfigError, DataError } from "../util/errors.js";
import { RewardModel } from "../worker/roles.js";
import { describeSkips, loadPreferences } from "./data/preferences.js";
import { spawnPipelineWorkers, type Workers } from "../worker/group.js";
import { WorkerApi } from "../worker/api.js";
import { SeededRng } from "../util/rng.js";
import { projectRoot } from "../util/python.js";
import type { Config } from "./config.js";
import { resolveDataDir } from "./data/dir.js";
import { assignPreferenceRoles, preferenceRolesDigest, assignRoles, describePrivateRoles, describePublicRoles, loadImdb, privateRolesDigest, type ImdbSources, type RoleSizes } from "./data/roles.js";
import { cleanReview } from "./data/jsonl.js";
import { disjointStages, planRun, formatPlan, stagesOf, IMDB_SIZES, type DataSizes, type RunPlan } from "./plan.js";
import { accountantCalibrator } from "./privacy.js";
import { RunDir } from "./run-dir.js";
import { InterruptedError, RunIntegrityError, ResumeMismatchError } from "./run-errors.js";
import { RunLock } from "./lock.js";
import { openRunSecret } from "./secret.js";
import { bindRun, fingerprintImdb } from "./binding.js";
import { silentProgress, type Progress } from "./progress.js";
import { modelSpec, type BaseModel, type PipelineContext, type StopRequest } from "./context.js";
import { describeHeldOut, pretrain, type PretrainResult } from "./stages/pretrain.js";
import { describeReward, trainRewardClassifier, loadRewardModel, REWARD_HANDLE, type RewardResult } from "./stages/reward.js";
import { runSft, type SftResult } from "./stages/sft.js";
import { runPpo, type PpoResult } from "./stages/ppo.js";
import { loadDpRewardModel, runRm, runRmOnPreferences, type RmResult } from "./stages/rm.js";
import { loadEvalRewardModel, trainEvalRewardModel, type EvalRmResult } from "./stages/eval-rm.js";
import { evaluateModel, type ModelEval } from "./stages/evaluate.js";
import type { StageHooks } from "./stages/common.js";
import { cutPrompts, tokenizeRows } from "./tokens.js";
import { privacyReport, type PrivacyReport } from "./privacy-report.js";
import { ledgerBatches, PRIVACY_LEDGER_FILE, readRunLedger } from "./dp-step.js";
import { writeReport } from "./report.js";
import { plotQuietly } from "./plot.js";
import { RunTensorBoard } from "./tensorboard.js";

export const DEFAULT_CACHE_DIR = join(projectRoot, ".dpalign-cache");

export interface RunOptions {
  cfg: Config;
  runDir: string;
  dataDir?: string;
  cacheDir?: string;
  progress?: Progress;
  /** An existing worker (tests, sweeps); otherwise one is spawned and closed. */
  api?: WorkerApi;
  hooks?: StageHooks;
  /** Already-loaded data (sweeps load it once), with the directory it came from. */
  data?: { data: ImdbSources; dir: string };
  /** Show statistics of private batches on the console (--verbose-private). */
  showPrivate?: boolean;
  /** Set by the CLI's signal handlers: stages stop at the next batch boundary, after saving. */
  stop?: StopRequest;
  /** Break a stale lock left by a process that is gone (--force-unlock). */
  forceUnlock?: boolean;
  /** --tensorboard DIR: event files of released metrics under DIR/<run directory's name>/ (ts/pipeline/tensorboard.ts). */
  tensorboard?: string;
}

export interface RunSummary {
  runDir: string;
  plan: RunPlan;
  pretrain: PretrainResult;
  /** The public sentiment classifier (absent in scenario reward-model). */
  reward?: RewardResult;
  sft?: SftResult;
  /** The DP reward model (scenarios rlhf and reward-model). */
  rm?: RmResult;
  /** The non-private, test-time-only evaluation reward model (scenario rlhf). */
  evalRm?: EvalRmResult;
  ppo?: PpoResult;
  evals: ModelEval[];
  privacy: PrivacyReport;
  wallS: number;
  stageWallS: Record<string, number>;
}

export function defaultRunDir(cfg: Config): string {
  const eps = Number.isFinite(cfg.privacy.epsilon) ? String(cfg.privacy.epsilon) : "inf";
  return join(projectRoot, "runs", `${cfg.name}-eps${eps}-seed${cfg.seed}`);
}

/** Refuses to reuse a run directory made with another config (a resumed run must be the same run). */
function claimRunDir(run: RunDir, cfg: Config): void {
  const prev = run.readJson<unknown>("config.json");
  // how many workers share the work changes nothing the run means: a run may resume with another number
  const norm = (c: unknown) => JSON.stringify(c, (k, v) => (v === Infinity ? "inf" : k === "workers" ? undefined : v));
  if (prev !== undefined && norm(prev) !== norm(cfg)) {
    const diff = differingFields(JSON.parse(norm(prev)), JSON.parse(norm(cfg)));
    throw new ResumeMismatchError(`${run.dir} holds a run with a different config (${diff.slice(0, 5).join(", ") || "config.json"} differ); pass another --run-dir, or the same config to resume`);
  }
  run.writeJson("config.json", cfg);
}

function differingFields(a: unknown, b: unknown, path = ""): string[] {
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null || Array.isArray(a) || Array.isArray(b)) {
    return JSON.stringify(a) === JSON.stringify(b) ? [] : [path || "(config)"];
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].flatMap((k) => differingFields((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k));
}

/**
 * The data sizes a plan needs before anything runs: IMDb's published split sizes, and in scenario
 * reward-model the number of usable pairs in the preference file (read, since it varies by file).
 */
export async function dataSizesForPlan(cfg: Config, dataDir?: string): Promise<DataSizes> {
  if (cfg.scenario !== "reward-model") return IMDB_SIZES;
  const { dir } = resolveDataDir({ flag: dataDir ?? cfg.dataDir });
  const prefs = await loadPreferenceFile(cfg, dir, silentProgress);
  return { ...IMDB_SIZES, pairs: prefs.load.pairs.length };
}

/** The preference pairs of scenario reward-model (data.preferences.file, under the data directory unless absolute). */
async function loadPreferenceFile(cfg: Config, dataDir: string, progress: Progress) {
  const file = isAbsolute(cfg.data.preferences.file) ? cfg.data.preferences.file : join(dataDir, cfg.data.preferences.file);
  if (!existsSync(file)) throw new DataError(`data.preferences.file: ${file} does not exist`);
  const load = await loadPreferences(cfg.data.preferences.format, file);
  progress.log(describeSkips(load));
  return { load, sha256: createHash("sha256").update(readFileSync(file)).digest("hex") };
}

/**
 * The IMDb role sizes of a config: D2 and the reward model's held-out prefixes exist only in
 * scenario rlhf; scenario reward-model takes its private data from the preference file, not IMDb.
 */
export function roleSizes(cfg: Config): RoleSizes {
  const rlhf = cfg.scenario === "rlhf";
  const privateSize = cfg.scenario === "reward-model" ? 0 : cfg.data.privateSize;
  return { ...cfg.data, privateSize, rmFraction: rlhf ? cfg.data.rmFraction : 0, rmHeldOut: rlhf ? cfg.data.rmHeldOut : 0 };
}

/** Whether the run directory already holds training progress (then its secret and binding must be there). */
function hasProgress(run: RunDir): boolean {
  return existsSync(run.path(PRIVACY_LEDGER_FILE)) || existsSync(run.path("checkpoints")) || existsSync(run.path("stages"));
}

export async function loadData(cfg: Config, dataDir?: string): Promise<{ data: ImdbSources; dir: string }> {
  const { dir } = resolveDataDir({ flag: dataDir ?? cfg.dataDir });
  return { data: await loadImdb(dir), dir };
}

export async function runPipeline(o: RunOptions): Promise<RunSummary> {
  const run = new RunDir(o.runDir);
  const lock = RunLock.acquire(run.dir, { forceUnlock: o.forceUnlock });
  try {
    return await runLocked(o, run);
  } finally {
    lock.release();
  }
}

async function runLocked(o: RunOptions, run: RunDir): Promise<RunSummary> {
  const t0 = Date.now();
  const { cfg } = o;
  if (cfg.data.source === "tldr") {
    throw new ConfigError(
      "data.source: tldr configs reproduce the paper's scenario 2 sizes for planning (dpalign run CONFIG --dry-run); this version runs RLHF on IMDb (configs/rlhf-demo.yaml) and reward models on preference files (configs/rm-hh-rlhf.yaml), not yet on TL;DR posts",
    );
  }
  const progress = o.progress ?? silentProgress;
  const cacheDir = o.cacheDir ?? DEFAULT_CACHE_DIR;
  const progressBefore = hasProgress(run);
  claimRunDir(run, cfg);
  const secret = openRunSecret(run, cfg.privacy.reproducible, cfg.seed, progressBefore);
  const { data, dir: dataDir } = o.data ?? (await loadData(cfg, o.dataDir));
  const roles = assignRoles(data, roleSizes(cfg), secret.rng.fork("roles"), disjointStages(cfg));
  const prefs = cfg.scenario === "reward-model" ? await loadPreferenceFile(cfg, dataDir, progress) : undefined;
  const prefRoles = prefs
    ? assignPreferenceRoles(prefs.load.pairs, { heldOut: cfg.data.preferences.heldOut, privateSize: cfg.data.privateSize, publicSeed: cfg.data.publicSeed }, secret.rng.fork("preference-roles"))
    : undefined;
  const fingerprint = { ...fingerprintImdb(dataDir), ...(prefs ? { preferences: prefs.sha256 } : {}) };
  bindRun(run, fingerprint, privateRolesDigest(roles) + (prefRoles ? `/${preferenceRolesDigest(prefRoles)}` : ""));
  const plan = planRun(cfg, accountantCalibrator, { train: data.train.length, test: data.test.length, unsup: data.unsup.length, pairs: prefs?.load.pairs.length });
  run.writeJson("plan.json", plan);
  verifyLedger(run, plan, false);
  // Released: the public roles and the public data files' hashes. Private: the split and its sizes.
  run.writeJson("roles.json", { ...describePublicRoles(roles), data: { test: fingerprint.test, unsup: fingerprint.unsup } });
  run.writePrivateJson("roles.json", {
    ...describePrivateRoles(roles),
    ...(prefRoles ? { preferences: { private: prefRoles.private.map((x) => x.id), removedAsPublic: prefRoles.removedAsPublic } } : {}),
  });
  if (prefRoles) run.writeJson("preferences.json", { file: prefs!.load.file, publicHeldOut: prefRoles.heldOut.map((x) => x.id), skipped: prefs!.load.skipped.length });
  progress.log(formatPlan(plan));
  if (o.showPrivate) progress.log("WARNING: --verbose-private prints statistics of private batches; do not publish this output");
  const tensorboard = o.tensorboard
    ? new RunTensorBoard(o.tensorboard, run.dir, {
      verbosePrivate: o.showPrivate ?? false, differentiallyPrivate: plan.dp && secret.mode !== "reproducible", delta: plan.delta,
      accountant: plan.accountant, calibrator: accountantCalibrator, log: (l) => progress.log(l),
    })
    : undefined;

  let client: Workers | undefined;
  const api = o.api ?? new WorkerApi((client = await spawnPipelineWorkers(cfg.workers, cfg.device, (l) => run.appendPrivateJsonl("worker-stderr.jsonl", l))));
  if (client && cfg.workers > 1) progress.log(`workers: ${cfg.workers} in one process group (${cfg.device.startsWith("cuda") ? "nccl" : "gloo"}); each batch is split over them, the noise added once`);
  const stageWallS: Record<string, number> = {};
  try {
    const stop = o.stop ?? { requested: false };
    // Public stages are cached only when complete: a stop requested during one ends it at the next step.
    const publicProgress = stoppable(progress, stop);
    let s = Date.now();
    const pre = cfg.model.kind === "tiny" ? await pretrain(api, cfg, roles.publicCorpus, cacheDir, publicProgress, roles.pretrainHeldOut) : await hfBase(api, cfg);
    stageWallS.pretrain = (Date.now() - s) / 1000;
    run.writeJson("stages/pretrain.json", pre);
    progress.log(`pretrain: ${pre.reused ? "reused cached model" : `trained in ${pre.wallS.toFixed(0)} s`} (${pre.key}, loss ${pre.finalLoss.toFixed(3)})`);
    if (pre.heldOut) progress.log(`pretrain: ${describeHeldOut(pre.heldOut)}`);
    const base: BaseModel = { tokenizerDir: pre.tokenizerDir, checkpoint: pre.checkpoint, padId: pre.padId, eosId: pre.eosId };

    const finish = async (parts: Pick<RunSummary, "reward" | "sft" | "rm" | "evalRm" | "ppo"> & { evals: ModelEval[] }): Promise<RunSummary> => {
      const records = verifyLedger(run, plan, true);
      const privacy = privacyReport(plan, records, accountantCalibrator, run.path(PRIVACY_LEDGER_FILE));
      run.writeJson("privacy.json", privacy);
      const summary: RunSummary = { runDir: run.dir, plan, pretrain: pre, ...parts, privacy, wallS: (Date.now() - t0) / 1000, stageWallS };
      // First in the file: whether the run's epsilon holds (DESIGN.md rule 6).
      const head = { differentiallyPrivate: privacy.differentiallyPrivate, ...(privacy.notPrivateReason ? { notPrivateReason: privacy.notPrivateReason } : {}), epsilon: privacy.composed.epsilon, delta: privacy.composed.delta };
      run.writeJson("summary.json", { ...head, ...summary, runDir: undefined, plan: undefined });
      writeReport(run, cfg, summary);
      await plotQuietly(run.dir, (l) => progress.log(l), "run"); // plots/*.svg from released files, embedded in report.md
      tensorboard?.final(summary);
      return summary;
    };

    if (prefRoles) {
      // Scenario reward-model: the DP reward model on private human preference pairs, and nothing else.
      const ctx: PipelineContext = {
        api, cfg, plan, run, progress, rng: secret.rng.fork("stages"), secretMode: secret.mode, showPrivate: o.showPrivate ?? false,
        stop, roles, cacheDir, base, reward: new RewardModel(api, REWARD_HANDLE), // never loaded: no gold labeller in this scenario
        tensorboard,
      };
      stopBetweenStages(stop, "the DP reward model");
      let rmRes = run.stageResult<RmResult>("rm");
      if (!rmRes) {
        s = Date.now();
        rmRes = await runRmOnPreferences(ctx, prefRoles.private, prefRoles.heldOut, o.hooks);
        stageWallS.rm = (Date.now() - s) / 1000;
        run.markDone("rm", rmRes);
      }
      progress.log(`DP reward model: accuracy ${(100 * rmRes.heldOutAccuracy).toFixed(1)}% on ${rmRes.heldOutPairs} public held-out pairs`);
      return await finish({ rm: rmRes, evals: [] });
    }

    s = Date.now();
    const rm = await trainRewardClassifier(api, cfg, base, roles.classifierTrain, roles.classifierHeldOut, cacheDir, publicProgress);
    stageWallS.reward = (Date.now() - s) / 1000;
    run.writeJson("stages/reward.json", rm);
    progress.log(describeReward(rm));
    const reward = await loadRewardModel(api, cfg, base, rm);
    let evalRm: EvalRmResult | undefined;
    if (cfg.scenario === "rlhf" && cfg.eval.rewardModelPairs > 0) {
      // Public data only (the classifier's reviews, the pretrained model, the gold labeller): cached across runs.
      s = Date.now();
      const pub = roles.classifierTrain.slice(0, cfg.eval.rewardModelPairs);
      const cutPub = async (recs: typeof pub, label: string) =>
        cutPrompts(await tokenizeRows(reward, recs.map((r) => cleanReview(r.text)), cfg.rm.promptTokens[1]), cfg.rm.promptTokens, new SeededRng(`${label}/${cfg.data.publicSeed}`)).filter((r) => r.length >= 1);
      evalRm = await trainEvalRewardModel(api, cfg, base, reward, await cutPub(pub, "eval-rm-prefixes"), await cutPub(roles.rmHeldOut, "rm-held-out"), cacheDir, publicProgress);
      stageWallS.evalRm = (Date.now() - s) / 1000;
      run.writeJson("stages/eval-rm.json", evalRm);
      progress.log(`evaluation reward model (non-private, public pairs only): accuracy ${(100 * evalRm.heldOutAccuracy).toFixed(1)}% on ${evalRm.heldOutPairs} public held-out pairs${evalRm.reused ? " (cached)" : ""}`);
    }

    const ctx: PipelineContext = {
      api, cfg, plan, run, progress, rng: secret.rng.fork("stages"), secretMode: secret.mode, showPrivate: o.showPrivate ?? false,
      stop, roles, cacheDir, base, reward, tensorboard,
    };
    const ppoCfg = cfg.ppo;
    stopBetweenStages(stop, "DP-SFT");
    let sft = run.stageResult<SftResult>("sft");
    if (!sft) {
      s = Date.now();
      const d1Rows = (await tokenizeRows(reward, roles.d1.map((r) => cleanReview(r.text)), cfg.sft.maxTokens)).filter((r) => r.length >= 2);
      sft = await runSft(ctx, d1Rows, o.hooks);
      stageWallS.sft = (Date.now() - s) / 1000;
      run.markDone("sft", sft);
    }
    let rmRes: RmResult | undefined;
    if (plan.rm) {
      stopBetweenStages(stop, "the DP reward model");
      rmRes = run.stageResult<RmResult>("rm");
      if (!rmRes) {
        s = Date.now();
        const rmCfg = cfg.rm;
        const d2Rows = await tokenizeRows(reward, roles.d2.map((r) => cleanReview(r.text)), rmCfg.promptTokens[1]);
        const d2Prefixes = cutPrompts(d2Rows, rmCfg.promptTokens, ctx.rng.fork("rm-prompt-lengths")).filter((r) => r.length >= 1);
        const heldRows = await tokenizeRows(reward, roles.rmHeldOut.map((r) => cleanReview(r.text)), rmCfg.promptTokens[1]);
        const heldPrefixes = cutPrompts(heldRows, rmCfg.promptTokens, new SeededRng(`rm-held-out/${cfg.data.publicSeed}`)).filter((r) => r.length >= 1);
        rmRes = await runRm(ctx, d2Prefixes, heldPrefixes, sft.checkpoint, o.hooks);
        stageWallS.rm = (Date.now() - s) / 1000;
        run.markDone("rm", rmRes);
      }
      progress.log(`DP reward model: accuracy ${(100 * rmRes.heldOutAccuracy).toFixed(1)}% on ${rmRes.heldOutPairs} public held-out pairs (gold labeller: the public classifier)`);
    }
    stopBetweenStages(stop, "DP-PPO");
    let ppo = run.stageResult<PpoResult>("ppo");
    if (!ppo) {
      s = Date.now();
      const d3Rows = await tokenizeRows(reward, roles.d3.map((r) => cleanReview(r.text)), ppoCfg.promptTokens[1]);
      const d3Prompts = cutPrompts(d3Rows, ppoCfg.promptTokens, ctx.rng.fork("prompt-lengths")).filter((r) => r.length >= 1);
      // Scenario rlhf: PPO optimises the DP reward model (post-processing of a DP model); else the public classifier.
      const ppoReward = rmRes ? await loadDpRewardModel(ctx, rmRes.checkpoint) : reward;
      ppo = await runPpo({ ...ctx, reward: ppoReward }, d3Prompts, sft.checkpoint, o.hooks);
      if (ppoReward !== reward) await ppoReward.unload();
      stageWallS.ppo = (Date.now() - s) / 1000;
      run.markDone("ppo", ppo);
    }
    stopBetweenStages(stop, "evaluation");
    let evals = run.stageResult<{ evals: ModelEval[] }>("evaluate")?.evals;
    if (!evals) {
      s = Date.now();
      // Each held-out review is cut into a prompt and its real continuation: the reference of ROUGE.
      const evCfg = cfg.eval;
      const evRows = await tokenizeRows(reward, roles.evalPrompts.map((r) => cleanReview(r.text)), evCfg.promptTokens[1] + evCfg.maxNewTokens);
      const cut = cutPrompts(evRows, evCfg.promptTokens, new SeededRng(`eval-prompts/${cfg.data.publicSeed}`));
      const keep = cut.map((p, i) => i).filter((i) => cut[i].length >= 1);
      const prompts = keep.map((i) => cut[i]);
      const references = await reward.decode(keep.map((i) => evRows[i].slice(cut[i].length, cut[i].length + evCfg.maxNewTokens)), base.padId);
      evals = [];
      const judge = evalRm ? await loadEvalRewardModel(api, cfg, base, evalRm) : undefined;
      for (const [name, ckpt] of [["pretrained", base.checkpoint], ["sft", run.resolve(sft.checkpoint)], ["aligned", run.resolve(ppo.checkpoint)]] as const) {
        progress.log(`evaluate: ${name} on ${prompts.length} held-out prompts`);
        const ev = await evaluateModel(ctx, name, ckpt, prompts, references, judge);
        for (const sm of ev.samples) run.appendJsonl("samples.jsonl", { model: name, ...sm });
        evals.push(ev);
      }
      await judge?.unload();
      stageWallS.evaluate = (Date.now() - s) / 1000;
      run.markDone("evaluate", { evals });
    }
    return await finish({ reward: rm, sft, ...(rmRes ? { rm: rmRes } : {}), ...(evalRm ? { evalRm } : {}), ppo, evals });
  } finally {
    if (client) await client.close();
    else await api.unloadModel(REWARD_HANDLE).catch(() => undefined); // a shared worker (sweeps, tests) keeps running
  }
}

function stopBetweenStages(stop: StopRequest, next: string): void {
  if (stop.requested) throw new InterruptedError(`stopped by ${stop.signal ?? "request"} before ${next}; completed stages are saved. Run the same command again to resume`);
}

/** A Progress whose update ends a public (cached-when-complete) stage once a stop is requested. */
function stoppable(p: Progress, stop: StopRequest): Progress {
  return {
    ...p,
    update(done, info) {
      if (stop.requested) {
        p.stop();
        throw new InterruptedError(`stopped by ${stop.signal ?? "request"} during a public pre-training stage (it is cached only when complete and will start over). Run the same command again to resume`);
      }
      p.update(done, info);
    },
  };
}

/** A Hugging Face base model needs no pre-training: the directory is the base (eps = 0 model). */
async function hfBase(api: WorkerApi, cfg: Config): Promise<PretrainResult> {
  const info = await api.loadModel({ handle: "probe", spec: modelSpec(cfg, { tokenizerDir: "", checkpoint: "" }, {}) });
  await api.unloadModel("probe");
  return { key: cfg.model.hfPath ?? "", dir: cfg.model.hfPath ?? "", tokenizerDir: "", checkpoint: "", padId: info.padTokenId, eosId: info.eosTokenId, finalLoss: NaN, wallS: 0, reused: true };
}

/**
 * The ledger against the run directory, at start (before anything runs, so tampering is caught
 * before more budget is spent) and at the end: a completed DP stage is accounted exactly as
 * planned, and no stage's checkpoint holds more batches than the ledger accounts.
 */
function verifyLedger(run: RunDir, plan: RunPlan, atEnd: boolean) {
  const { records, ledger } = readRunLedger(run);
  for (const sp of stagesOf(plan)) {
    if (!sp.dp) continue;
    const accounted = ledgerBatches(records, sp, ledger.path);
    if ((atEnd || run.isDone(sp.stage)) && accounted !== sp.sampledBatches) {
      throw new RunIntegrityError(
        `${ledger.path}: the ledger accounts ${accounted} ${sp.stage} batches but the stage completed ${sp.sampledBatches} (was the ledger deleted or cut?); the run's epsilon cannot be established: start again in a new --run-dir`,
      );
    }
    const manifestFile = join("checkpoints", sp.stage, "last", "manifest.json");
    const manifest = run.readJson<{ metadata?: Record<string, string> }>(manifestFile);
    if (!manifest) {
      if (atEnd) throw new RunIntegrityError(`${run.path(manifestFile)} is missing at the end of the run; start again in a new --run-dir`);
      continue;
    }
    const held = Number(manifest.metadata?.batches ?? NaN);
    if (!(held <= accounted)) {
      throw new RunIntegrityError(
        `${ledger.path}: the ${sp.stage} checkpoint holds ${held} batches but the ledger accounts ${accounted}: batches ran that the ledger does not show (was it deleted or cut?); the run's epsilon cannot be established: start again in a new --run-dir`,
      );
    }
  }
  return records;
}

export function isComplete(runDir: string): boolean {
  return existsSync(join(runDir, "summary.json"));
}
