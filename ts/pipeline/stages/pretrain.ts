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
import { firstWords, heldOutLm, type HeldOutLm } from "./lm-eval.js";

/** Held-out unsup documents are cut to their first this many words, so every tokenizer scores the same text. */
export const HELD_OUT_WORDS = 32;

/** Perplexity of the pretrained model on public unsup documents never used for training or the tokenizer. */
export interface PretrainHeldOut extends HeldOutLm {
  /** Digest of the held-out documents' ids and the words per document (what the figure was measured on). */
  idsSha256: string;
}

export interface PretrainResult extends BaseModel {
  key: string;
  dir: string;
  finalLoss: number;
  wallS: number;
  reused: boolean;
  /** Training sequences available (windows of seqLen tokens) and tokens seen by the optimizer (non-pad targets included). */
  sequences?: number;
  tokensSeen?: number;
  /** Absent when data.pretrainHeldOut is 0. */
  heldOut?: PretrainHeldOut;
}

/** The held-out figure as the run output and report.md give it. */
export function describeHeldOut(h: PretrainHeldOut): string {
  return `held-out perplexity ${h.perplexity.toFixed(1)} per token (loss ${h.loss.toFixed(3)}), ${h.wordPerplexity.toFixed(1)} per word, on the first ${HELD_OUT_WORDS} words of ${h.texts} public unsup reviews never used for training`;
}

/** Each row cut into consecutive windows of `len` tokens: up to `perDoc` of them, a later one only if at least half full. */
export function windows(rows: readonly (readonly number[])[], len: number, perDoc: number): number[][] {
  const out: number[][] = [];
  for (const r of rows) {
    for (let k = 0; k < perDoc && k * len < r.length; k++) {
      const w = r.slice(k * len, (k + 1) * len);
      if (w.length >= 2 && (k === 0 || 2 * w.length >= len)) out.push(w);
    }
  }
  return out;
}

export function pretrainKey(cfg: Config, corpus: readonly ImdbRecord[]): string {
  const ids = createHash("sha256").update(corpus.map((r) => r.id).join("\n")).digest("hex");
  const desc = JSON.stringify({ v: 1, tiny: cfg.model.tiny, pretrain: cfg.pretrain, seed: cfg.data.publicSeed, ids });
  return createHash("sha256").update(desc).digest("hex").slice(0, 16);
}

/**
 * The pretrained model (trained now, or reused from the cache) and, with held-out documents, its
 * held-out perplexity (measured once per held-out set and kept with the cached model).
 */
export async function pretrain(api: WorkerApi, cfg: Config, corpus: readonly ImdbRecord[], cacheDir: string, progress: Progress, heldOut: readonly ImdbRecord[] = []): Promise<PretrainResult> {
  const key = pretrainKey(cfg, corpus);
  const dir = join(cacheDir, "pretrain", key);
  const doneFile = join(dir, "done.json");
  const res = existsSync(doneFile) ? { ...(JSON.parse(readFileSync(doneFile, "utf8")) as PretrainResult), reused: true } : await train(api, cfg, corpus, dir, key, progress);
  if (!heldOut.length) return { ...res, heldOut: undefined };
  const idsSha256 = createHash("sha256").update(`${HELD_OUT_WORDS}\n${heldOut.map((r) => r.id).join("\n")}`).digest("hex").slice(0, 16);
  if (res.heldOut?.idsSha256 === idsSha256) return res;
  const lm = new LanguageModel(api, "pretrain-held-out");
  await lm.load(modelSpec(cfg, res, { lora: false }));
  try {
    const rows = await tokenizeRows(lm, heldOut.map((r) => firstWords(cleanReview(r.text), HELD_OUT_WORDS)), cfg.model.tiny.nPositions);
    const out: PretrainResult = { ...res, heldOut: { ...(await heldOutLm(api, "pretrain-held-out", rows, res.padId)), idsSha256 } };
    writeFileSync(doneFile, JSON.stringify({ ...out, reused: false }, null, 2));
    return out;
  } finally {
    await lm.unload();
  }
}

async function train(api: WorkerApi, cfg: Config, corpus: readonly ImdbRecord[], dir: string, key: string, progress: Progress): Promise<PretrainResult> {
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
  const rows = windows(await tokenizeRows(lm, texts, p.seqLen * p.windowsPerDoc), p.seqLen, p.windowsPerDoc);
  progress.log(`pretrain: ${rows.length} sequences of up to ${p.seqLen} tokens from ${texts.length} public reviews; ${p.steps} steps of ${p.batchSize}`);
  const rng = new SeededRng(`pretrain/${cfg.data.publicSeed}`);
  progress.start("pretrain", p.steps);
  let loss = NaN;
  let ema = NaN;
  let tokensSeen = 0;
  const nextBatch = cyclingBatches(rows.length, p.batchSize, rng);
  for (let t = 0; t < p.steps; t++) {
    const batch = nextBatch().map((i) => rows[i]);
    for (const r of batch) tokensSeen += r.length;
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
    finalLoss: ema, wallS: (Date.now() - t0) / 1000, reused: false, sequences: rows.length, tokensSeen,
  };
  writeFileSync(join(dir, "done.json"), JSON.stringify(result, null, 2));
  return result;
}
