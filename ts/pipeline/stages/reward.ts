/**
 * The public reward: a sentiment classifier (the pretrained body plus a scalar head) trained
 * non-privately on the public labeled set; reward = its positive-class logit. Its accuracy on
 * held-out labeled reviews is reported. Cached like the pretrained model (public data only).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { WorkerApi } from "../../worker/api.js";
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
  checkpoint: string;
  heldOutAccuracy: number;
  heldOutSize: number;
  trainSize: number;
  wallS: number;
  reused: boolean;
}

export async function trainRewardClassifier(
  api: WorkerApi, cfg: Config, base: BaseModel & { key?: string }, train: readonly ImdbRecord[], heldOut: readonly ImdbRecord[],
  cacheDir: string, progress: Progress,
): Promise<RewardResult> {
  const ids = createHash("sha256").update([...train, ...heldOut].map((r) => r.id).join("\n")).digest("hex");
  const key = createHash("sha256").update(JSON.stringify({ v: 1, base: base.checkpoint, r: cfg.reward, seed: cfg.data.publicSeed, ids })).digest("hex").slice(0, 16);
  const dir = join(cacheDir, "reward", key);
  const doneFile = join(dir, "done.json");
  if (existsSync(doneFile)) return { ...(JSON.parse(readFileSync(doneFile, "utf8")) as RewardResult), reused: true };
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
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
  const checkpoint = join(dir, "checkpoint");
  await rm.save(checkpoint, { stage: "reward", key });
  const heldRows = await window(heldOut);
  const scores = await rm.score(heldRows, base.padId);
  const correct = scores.filter((s, i) => (s > 0 ? 1 : 0) === heldOut[i].label).length;
  await rm.unload();
  const result: RewardResult = {
    key, checkpoint, heldOutAccuracy: heldOut.length ? correct / heldOut.length : NaN, heldOutSize: heldOut.length,
    trainSize: train.length, wallS: (Date.now() - t0) / 1000, reused: false,
  };
  writeFileSync(doneFile, JSON.stringify(result, null, 2));
  return result;
}

/** Loads the trained classifier for scoring (the public reward of PPO and evaluation). */
export async function loadRewardModel(api: WorkerApi, cfg: Config, base: BaseModel, rm: RewardResult): Promise<RewardModel> {
  const model = new RewardModel(api, REWARD_HANDLE);
  await model.load(modelSpec(cfg, base, { rewardHead: true, initCheckpoint: rm.checkpoint }));
  return model;
}
