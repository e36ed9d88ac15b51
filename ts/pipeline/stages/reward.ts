/**
 * The public reward: a sentiment classifier (the pretrained body plus a scalar head) trained
 * non-privately on the public labeled set; reward = its positive-class logit. Its accuracy on
 * held-out labeled reviews is reported. Cached like the pretrained model (public data only).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Tensor } from "../../transport/tensor.js";
import type { WorkerApi } from "../../worker/api.js";
import { SeededRng } from "../../util/rng.js";
import type { Config } from "../config.js";
import { cleanReview, type ImdbRecord } from "../data/jsonl.js";
import { adamw, lrAt, modelSpec, type BaseModel } from "../context.js";
import { idsBatch, tailChars, tokenizeRows } from "../tokens.js";
import type { Progress } from "../progress.js";

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
  const handle = "reward-train";
  await api.loadModel({ handle, spec: modelSpec(cfg, base, { rewardHead: true, trainBase: true, initSeed: cfg.data.publicSeed }), optimizer: adamw(0.01) });
  const window = async (recs: readonly ImdbRecord[]) => {
    const texts = recs.map((x) => cleanReview(x.text));
    if (r.window === "head") return tokenizeRows(api, handle, texts, r.maxTokens);
    return (await tokenizeRows(api, handle, texts.map((x) => tailChars(x, r.maxTokens)), 0, 500)).map((row) => row.slice(-r.maxTokens));
  };
  const rows = await window(train);
  const labels = train.map((x) => x.label ?? 0);
  const rng = new SeededRng(`reward/${cfg.data.publicSeed}`);
  progress.start("reward", r.steps);
  let ema = NaN;
  let order = rng.shuffle(rows.map((_, i) => i));
  let cursor = 0;
  for (let t = 0; t < r.steps; t++) {
    if (cursor + r.batchSize > order.length) {
      order = rng.shuffle(order);
      cursor = 0;
    }
    const idx = order.slice(cursor, (cursor += r.batchSize));
    const res = await api.trainStep({
      handle, loss: "classification", lr: lrAt("cosine", r.lr, t, r.steps),
      batch: { ...idsBatch(idx.map((i) => rows[i]), base.padId), labels: Tensor.int64(idx.map((i) => labels[i])) },
      dp: { enabled: false, noiseMultiplier: 0, maxGradNorm: 1, expectedBatchSize: idx.length, secureNoise: false },
    });
    ema = Number.isNaN(ema) ? res.loss : 0.95 * ema + 0.05 * res.loss;
    progress.update(t + 1, `loss ${ema.toFixed(3)}`);
  }
  progress.stop();
  const checkpoint = join(dir, "checkpoint");
  await api.saveCheckpoint({ handle, dir: checkpoint, metadata: { stage: "reward", key } });
  const heldRows = await window(heldOut);
  const scores = await scoreTexts(api, handle, heldRows, base.padId);
  const correct = scores.filter((s, i) => (s > 0 ? 1 : 0) === heldOut[i].label).length;
  await api.unloadModel(handle);
  const result: RewardResult = {
    key, checkpoint, heldOutAccuracy: heldOut.length ? correct / heldOut.length : NaN, heldOutSize: heldOut.length,
    trainSize: train.length, wallS: (Date.now() - t0) / 1000, reused: false,
  };
  writeFileSync(doneFile, JSON.stringify(result, null, 2));
  return result;
}

/** Positive-class logits of token rows (prompt + response), in chunks. */
export async function scoreTexts(api: WorkerApi, handle: string, rows: readonly (readonly number[])[], pad: number, chunk = 256): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < rows.length; i += chunk) {
    const part = rows.slice(i, i + chunk).map((r) => (r.length ? r : [pad]));
    const rep = await api.scoreSequences({ handle, batch: idsBatch(part, pad), rewards: true });
    out.push(...rep.rewards.toNumbers());
  }
  return out;
}

/** Loads the trained classifier under REWARD_HANDLE for scoring. */
export async function loadRewardModel(api: WorkerApi, cfg: Config, base: BaseModel, rm: RewardResult): Promise<void> {
  await api.loadModel({ handle: REWARD_HANDLE, spec: modelSpec(cfg, base, { rewardHead: true, initCheckpoint: rm.checkpoint }) });
}
