/**
 * The public reward of PPO and of the evaluation (reward.kind):
 *   ngram        a linear classifier on hashed n-grams of the policy's token ids (py_runtime/.../engine/ngram.py),
 *                trained non-privately on whole public labeled reviews; reward = its positive-class logit
 *   transformer  the pretrained body plus a scalar head, trained on a window of each labeled review
 *   hf           a Hugging Face sequence classifier (reward.path, reward.labelIndex), used as it is
 *   python       a user's function(prompts, completions) -> scores, called inside the worker
 * Every kind is measured on held-out public labeled reviews, whole and cut to their last
 * reward.shortWindow tokens (PPO scores short texts). Trained classifiers are cached like the
 * pretrained model (public data only); hf and python rewards are measured at each run.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { WorkerApi } from "../../worker/api.js";
import type { ModelSpec } from "../../protocol/messages.js";
import { RewardModel } from "../../worker/roles.js";
import { SeededRng } from "../../util/rng.js";
import type { Config } from "../config.js";
import { cleanReview, type ImdbRecord } from "../data/jsonl.js";
import { adamw, lrAt, modelSpec, nonPrivate, type BaseModel } from "../context.js";
import { tailChars, tokenizeRows } from "../tokens.js";
import type { Progress } from "../progress.js";
import { cyclingBatches } from "../sampling.js";

export const REWARD_HANDLE = "reward";

export interface RewardResult {
  key: string;
  /** reward.kind (absent in results cached before kinds existed: "transformer"). */
  kind?: Config["reward"]["kind"];
  /** The trained classifier's checkpoint ("" for hf and python rewards). */
  checkpoint: string;
  /** Accuracy (score > 0 means positive) on held-out public reviews: whole reviews for ngram/hf/python, the training window for transformer. */
  heldOutAccuracy: number;
  /** The same reviews cut to their last shortWindowTokens tokens. */
  shortWindowAccuracy?: number;
  shortWindowTokens?: number;
  heldOutSize: number;
  trainSize: number;
  /** Seconds spent training (tokenisation and measurement excluded); 0 for hf and python. */
  trainS?: number;
  wallS: number;
  reused: boolean;
}

/** One line for logs and reports: what the reward is and how accurate it is. */
export function describeReward(r: RewardResult): string {
  const kind = r.kind ?? "transformer";
  const what = kind === "ngram" ? "n-gram classifier" : kind === "transformer" ? "transformer classifier" : kind === "hf" ? "Hugging Face classifier" : "Python reward function";
  const short = r.shortWindowAccuracy !== undefined ? `, ${(100 * r.shortWindowAccuracy).toFixed(1)}% on their last ${r.shortWindowTokens} tokens` : "";
  const whole = kind === "transformer" ? "on the classifier's window of" : "on whole";
  const trained = r.trainSize ? `; trained on ${r.trainSize} public reviews${r.trainS !== undefined ? ` in ${r.trainS.toFixed(1)} s` : ""}` : "";
  return `reward (${what}): held-out accuracy ${(100 * r.heldOutAccuracy).toFixed(1)}% ${whole} ${r.heldOutSize} public reviews${short}${trained}${r.reused ? " (cached)" : ""}`;
}

/** The tokenizer directory of the policy (the tiny model's, or the Hugging Face model's directory or id). */
function policyTokenizer(cfg: Config, base: Pick<BaseModel, "tokenizerDir">): string {
  return base.tokenizerDir || cfg.model.hfPath || "";
}

/** The ModelSpec of the configured reward, for the non-transformer kinds. */
export function rewardSpec(cfg: Config, base: Pick<BaseModel, "tokenizerDir">, checkpoint = ""): ModelSpec {
  const r = cfg.reward;
  const tokenizerDir = policyTokenizer(cfg, base);
  const spec: ModelSpec = r.kind === "ngram" ? { ngram: { buckets: r.ngram.buckets, maxN: r.ngram.maxN, tokenizerDir } }
    : r.kind === "hf" ? { hfClassifier: { path: localPath(r.path!), labelIndex: r.labelIndex, tokenizer: r.tokenizer ? localPath(r.tokenizer) : "", tokenizerDir } }
      : { pythonReward: { function: r.function!, pythonPath: r.pythonPath.map((p) => resolve(p)), tokenizerDir } };
  if (checkpoint) spec.initCheckpoint = checkpoint;
  if (cfg.device) spec.device = cfg.device;
  return spec;
}

/** A relative directory that exists is made absolute (the worker may run elsewhere); anything else may be a Hugging Face id. */
function localPath(p: string): string {
  return !isAbsolute(p) && existsSync(p) ? resolve(p) : p;
}

export async function trainRewardClassifier(
  api: WorkerApi, cfg: Config, base: BaseModel & { key?: string }, train: readonly ImdbRecord[], heldOut: readonly ImdbRecord[],
  cacheDir: string, progress: Progress,
): Promise<RewardResult> {
  const r = cfg.reward;
  if (r.kind === "hf" || r.kind === "python") return measureGiven(api, cfg, base, heldOut, progress);
  const ids = createHash("sha256").update([...train, ...heldOut].map((x) => x.id).join("\n")).digest("hex");
  // each kind keys on what it depends on only (the n-gram model on the tokenizer, not the base weights)
  const keyed = r.kind === "ngram"
    ? { v: 2, kind: r.kind, tokenizer: policyTokenizer(cfg, base), ngram: r.ngram, short: r.shortWindow, seed: cfg.data.publicSeed, ids }
    : { v: 2, kind: r.kind, base: base.checkpoint, r: { steps: r.steps, batchSize: r.batchSize, lr: r.lr, maxTokens: r.maxTokens, window: r.window }, short: r.shortWindow, seed: cfg.data.publicSeed, ids };
  const key = createHash("sha256").update(JSON.stringify(keyed)).digest("hex").slice(0, 16);
  const dir = join(cacheDir, "reward", key);
  const doneFile = join(dir, "done.json");
  if (existsSync(doneFile)) return { ...(JSON.parse(readFileSync(doneFile, "utf8")) as RewardResult), reused: true };
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  const res = r.kind === "ngram"
    ? await trainNgram(api, cfg, base, train, heldOut, join(dir, "checkpoint"), key, progress)
    : await trainTransformer(api, cfg, base, train, heldOut, join(dir, "checkpoint"), key, progress);
  const result: RewardResult = { key, kind: r.kind, checkpoint: join(dir, "checkpoint"), ...res, heldOutSize: heldOut.length, trainSize: train.length, wallS: (Date.now() - t0) / 1000, reused: false };
  writeFileSync(doneFile, JSON.stringify(result, null, 2));
  return result;
}

type Measured = Pick<RewardResult, "heldOutAccuracy" | "shortWindowAccuracy" | "shortWindowTokens" | "trainS">;

function accuracy(scores: readonly number[], recs: readonly ImdbRecord[]): number {
  return recs.length ? scores.filter((s, i) => (s > 0 ? 1 : 0) === recs[i].label).length / recs.length : NaN;
}

/** tokenizeRows in order of text length, so that each request's rows are padded to similar lengths (whole reviews vary 100-fold). */
async function tokenizeByLength(rm: RewardModel, texts: readonly string[], maxTokens: number): Promise<number[][]> {
  const order = texts.map((_, i) => i).sort((a, b) => texts[a].length - texts[b].length);
  const sorted = await tokenizeRows(rm, order.map((i) => texts[i]), maxTokens, 500);
  const out: number[][] = new Array(texts.length);
  order.forEach((i, k) => (out[i] = sorted[k]));
  return out;
}

/** Accuracy on whole held-out reviews (cut to maxTokens when > 0) and on their last `short` tokens. */
async function measure(rm: RewardModel, heldOut: readonly ImdbRecord[], pad: number, maxTokens: number, short: number): Promise<Measured> {
  const recs = [...heldOut].sort((a, b) => a.text.length - b.text.length); // similar lengths share a padded request
  const rows = await tokenizeRows(rm, recs.map((x) => cleanReview(x.text)), maxTokens, 500);
  const tails = (await tokenizeRows(rm, recs.map((x) => tailChars(cleanReview(x.text), short)), 0, 500)).map((row) => row.slice(-short));
  return {
    heldOutAccuracy: accuracy(await rm.score(rows, pad), recs),
    shortWindowAccuracy: accuracy(await rm.score(tails, pad), recs), shortWindowTokens: short,
  };
}

async function trainNgram(
  api: WorkerApi, cfg: Config, base: BaseModel, train: readonly ImdbRecord[], heldOut: readonly ImdbRecord[], checkpoint: string, key: string, progress: Progress,
): Promise<Measured> {
  const g = cfg.reward.ngram;
  const rm = new RewardModel(api, "reward-train");
  await rm.load(rewardSpec(cfg, base), { ...adamw(g.weightDecay), lr: g.lr });
  try {
    const rows = (await tokenizeByLength(rm, train.map((x) => cleanReview(x.text)), g.maxTokens)).map((row) => (row.length ? row : [base.padId]));
    const labels = train.map((x) => x.label ?? 0);
    const batch = Math.min(g.batchSize, rows.length);
    const steps = Math.max(1, Math.round((g.epochs * rows.length) / batch));
    const rng = new SeededRng(`reward/${cfg.data.publicSeed}`);
    // Reviews run from 10 to 4,000 tokens and a batch is padded to its longest: batches of similar
    // lengths (a random group of GROUP batches, sorted by length, cut, served in random order) send
    // and hash several times fewer pad tokens. The loss is per review, so this changes no gradient's expectation.
    const GROUP = 8;
    const nextGroup = cyclingBatches(rows.length, Math.min(rows.length, batch * GROUP), rng);
    let queue: number[][] = [];
    const nextBatch = (): number[] => {
      if (!queue.length) {
        const idx = nextGroup().sort((a, b) => rows[a].length - rows[b].length);
        for (let i = 0; i + batch <= idx.length; i += batch) queue.push(idx.slice(i, i + batch));
        queue = rng.shuffle(queue);
      }
      return queue.pop()!;
    };
    const t0 = Date.now();
    progress.start("reward (n-gram)", steps);
    let ema = NaN;
    const short = cfg.reward.shortWindow;
    const example = (row: number[]): number[] => {
      if (rng.next() >= g.windowFraction || row.length <= 1) return row;
      const len = 1 + rng.int(Math.min(short, row.length));
      const start = rng.int(row.length - len + 1);
      return row.slice(start, start + len);
    };
    for (let t = 0; t < steps; t++) {
      const idx = nextBatch();
      const res = await rm.trainClassifier(idx.map((i) => example(rows[i])), idx.map((i) => labels[i]), base.padId, { lr: lrAt("cosine", g.lr, t, steps), dp: nonPrivate(idx.length) });
      ema = Number.isNaN(ema) ? res.loss : 0.9 * ema + 0.1 * res.loss;
      progress.update(t + 1, `loss ${ema.toFixed(3)}`);
    }
    progress.stop();
    const trainS = (Date.now() - t0) / 1000;
    await rm.save(checkpoint, { stage: "reward", kind: "ngram", key });
    return { ...(await measure(rm, heldOut, base.padId, g.maxTokens, cfg.reward.shortWindow)), trainS };
  } finally {
    await rm.unload();
  }
}

async function trainTransformer(
  api: WorkerApi, cfg: Config, base: BaseModel, train: readonly ImdbRecord[], heldOut: readonly ImdbRecord[], checkpoint: string, key: string, progress: Progress,
): Promise<Measured> {
  const r = cfg.reward;
  const rm = new RewardModel(api, "reward-train");
  await rm.load(modelSpec(cfg, base, { rewardHead: true, trainBase: true, initSeed: cfg.data.publicSeed }), adamw(0.01));
  const window = async (recs: readonly ImdbRecord[]) => {
    const texts = recs.map((x) => cleanReview(x.text));
    if (r.window === "head") return tokenizeRows(rm, texts, r.maxTokens);
    return (await tokenizeRows(rm, texts.map((x) => tailChars(x, r.maxTokens)), 0, 500)).map((row) => row.slice(-r.maxTokens));
  };
  const rows = await window(train);
  const labels = train.map((x) => x.label ?? 0);
  const rng = new SeededRng(`reward/${cfg.data.publicSeed}`);
  const t0 = Date.now();
  progress.start("reward", r.steps);
  let ema = NaN;
  const nextBatch = cyclingBatches(rows.length, r.batchSize, rng);
  for (let t = 0; t < r.steps; t++) {
    const idx = nextBatch();
    const res = await rm.trainClassifier(idx.map((i) => rows[i]), idx.map((i) => labels[i]), base.padId, { lr: lrAt("cosine", r.lr, t, r.steps), dp: nonPrivate(idx.length) });
    ema = Number.isNaN(ema) ? res.loss : 0.95 * ema + 0.05 * res.loss;
    progress.update(t + 1, `loss ${ema.toFixed(3)}`);
  }
  progress.stop();
  const trainS = (Date.now() - t0) / 1000;
  await rm.save(checkpoint, { stage: "reward", key });
  // the window it was trained on (its positions end at the model's maximum), then the short tail
  const heldOutAccuracy = accuracy(await rm.score(await window(heldOut), base.padId), heldOut);
  const short = cfg.reward.shortWindow;
  const tails = (await tokenizeRows(rm, heldOut.map((x) => tailChars(cleanReview(x.text), short)), 0, 500)).map((row) => row.slice(-short));
  const shortWindowAccuracy = accuracy(await rm.score(tails, base.padId), heldOut);
  await rm.unload();
  return { heldOutAccuracy, shortWindowAccuracy, shortWindowTokens: short, trainS };
}

/** hf and python rewards: nothing to train; their accuracy on the same held-out reviews. */
async function measureGiven(api: WorkerApi, cfg: Config, base: BaseModel, heldOut: readonly ImdbRecord[], progress: Progress): Promise<RewardResult> {
  const t0 = Date.now();
  const rm = new RewardModel(api, "reward-measure");
  await rm.load(rewardSpec(cfg, base));
  try {
    progress.log(`reward (${cfg.reward.kind}): measuring on ${heldOut.length} held-out public reviews`);
    const m = await measure(rm, heldOut, base.padId, 0, cfg.reward.shortWindow);
    const key = createHash("sha256").update(JSON.stringify({ kind: cfg.reward.kind, path: cfg.reward.path, fn: cfg.reward.function })).digest("hex").slice(0, 16);
    return { key, kind: cfg.reward.kind, checkpoint: "", ...m, trainS: 0, heldOutSize: heldOut.length, trainSize: 0, wallS: (Date.now() - t0) / 1000, reused: false };
  } finally {
    await rm.unload();
  }
}

/** Loads the reward for scoring (the public reward of PPO and evaluation). */
export async function loadRewardModel(api: WorkerApi, cfg: Config, base: BaseModel, rm: RewardResult): Promise<RewardModel> {
  const model = new RewardModel(api, REWARD_HANDLE);
  const kind = rm.kind ?? "transformer";
  await model.load(kind === "transformer" ? modelSpec(cfg, base, { rewardHead: true, initCheckpoint: rm.checkpoint }) : rewardSpec(cfg, base, rm.checkpoint));
  return model;
}
