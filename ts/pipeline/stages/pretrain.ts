/**
 * Non-private pre-training of the built-in tiny model and its tokenizer on the public corpus
 * (unsup). Cached under .dpalign-cache/pretrain/<hash of config and data>, so later runs reuse it.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { WorkerApi } from "../../worker/api.js";
import { SeededRng } from "../../util/rng.js";
import type { Config } from "../config.js";
import { cleanReview, type ImdbRecord } from "../data/jsonl.js";
import { adamw, nonPrivate, lrAt, modelSpec, type BaseModel } from "../context.js";
import { tokenizeRows } from "../tokens.js";
import { LanguageModel } from "../../worker/roles.js";
import type { Progress } from "../progress.js";
import { cyclingBatches } from "../sampling.js";

export interface PretrainResult extends BaseModel {
  key: string;
  dir: string;
  finalLoss: number;
  wallS: number;
  reused: boolean;
}

export function pretrainKey(cfg: Config, corpus: readonly ImdbRecord[]): string {
  const ids = createHash("sha256").update(corpus.map((r) => r.id).join("\n")).digest("hex");
  const desc = JSON.stringify({ v: 1, tiny: cfg.model.tiny, pretrain: cfg.pretrain, seed: cfg.data.publicSeed, ids });
  return createHash("sha256").update(desc).digest("hex").slice(0, 16);
}

export async function pretrain(api: WorkerApi, cfg: Config, corpus: readonly ImdbRecord[], cacheDir: string, progress: Progress): Promise<PretrainResult> {
  const key = pretrainKey(cfg, corpus);
  const dir = join(cacheDir, "pretrain", key);
  const doneFile = join(dir, "done.json");
  if (existsSync(doneFile)) return { ...(JSON.parse(readFileSync(doneFile, "utf8")) as PretrainResult), reused: true };
  const t0 = Date.now();
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const p = cfg.pretrain;
  const texts = corpus.map((r) => cleanReview(r.text));
  const tokenizerDir = join(dir, "tokenizer");
  progress.log(`pretrain: training a ${cfg.model.tiny.vocabSize}-token tokenizer on ${Math.min(p.tokenizerDocs, texts.length)} public reviews`);
  await api.trainTokenizer({ texts: texts.slice(0, p.tokenizerDocs), vocabSize: cfg.model.tiny.vocabSize, outDir: tokenizerDir });
  const lm = new LanguageModel(api, "pretrain");
  const info = await lm.load(modelSpec(cfg, { tokenizerDir, checkpoint: "" }, { trainBase: true, lora: false, initSeed: cfg.data.publicSeed }), adamw(p.weightDecay));
  const rows = (await tokenizeRows(lm, texts, p.seqLen)).filter((r) => r.length >= 2);
  const rng = new SeededRng(`pretrain/${cfg.data.publicSeed}`);
  progress.start("pretrain", p.steps);
  let loss = NaN;
  let ema = NaN;
  const nextBatch = cyclingBatches(rows.length, p.batchSize, rng);
  for (let t = 0; t < p.steps; t++) {
    const batch = nextBatch().map((i) => rows[i]);
    const r = await lm.trainLm(batch, info.padTokenId, { lr: lrAt("cosine", p.lr, t, p.steps), dp: nonPrivate(batch.length) });
    loss = r.loss;
    ema = Number.isNaN(ema) ? loss : 0.95 * ema + 0.05 * loss;
    progress.update(t + 1, `loss ${ema.toFixed(3)}`);
  }
  progress.stop();
  const checkpoint = join(dir, "checkpoint");
  await lm.save(checkpoint, { stage: "pretrain", key });
  await lm.unload();
  const result: PretrainResult = {
    key, dir, tokenizerDir, checkpoint, padId: info.padTokenId, eosId: info.eosTokenId,
    finalLoss: ema, wallS: (Date.now() - t0) / 1000, reused: false,
  };
  writeFileSync(doneFile, JSON.stringify(result, null, 2));
  return result;
}
