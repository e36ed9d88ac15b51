/**
 * Scenario rlhf: the evaluation reward model, a non-private reward model used only at test time
 * (as the paper judges its TL;DR policies with a non-private reward model). It never sees D2: its
 * pairs are two completions by the public pretrained model of public prefixes (the classifier's
 * public reviews), ordered by the gold labeller; so it depends on public data only and is cached
 * like the classifier. It judges the models beside the gold labeller, and PPO may not train on it
 * (config: ppo.reward).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { WorkerApi } from "../../worker/api.js";
import { Generator, RewardModel } from "../../worker/roles.js";
import { SeededRng } from "../../util/rng.js";
import type { Config } from "../config.js";
import { adamw, modelSpec, nonPrivate, type BaseModel } from "../context.js";
import type { Progress } from "../progress.js";
import { cyclingBatches } from "../sampling.js";
import { goldPairs, pairAccuracy } from "./rm.js";

export const EVAL_RM_HANDLE = "eval-rm";

export interface EvalRmResult {
  key: string;
  checkpoint: string;
  /** Accuracy on public held-out pairs (the pretrained model's completions of the held-out prefixes). */
  heldOutAccuracy: number;
  trainPairs: number;
  heldOutPairs: number;
  wallS: number;
  reused: boolean;
}

const EPOCHS = 2;
const BATCH = 64;
const LR = 1e-3;

export async function trainEvalRewardModel(
  api: WorkerApi, cfg: Config, base: BaseModel, gold: RewardModel, prefixes: number[][], heldOutPrefixes: number[][], cacheDir: string, progress: Progress,
): Promise<EvalRmResult> {
  const key = createHash("sha256")
    .update(JSON.stringify({ v: 2, base: base.checkpoint, model: cfg.model, rm: [cfg.rm.responseTokens, cfg.rm.temperature, cfg.rm.pooling], seed: cfg.data.publicSeed, prefixes, heldOutPrefixes }))
    .digest("hex").slice(0, 16);
  const dir = join(cacheDir, "eval-rm", key);
  const doneFile = join(dir, "done.json");
  if (existsSync(doneFile)) return { ...(JSON.parse(readFileSync(doneFile, "utf8")) as EvalRmResult), reused: true };
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  const pad = base.padId;
  const sampler = new Generator(api, "eval-rm-pairs");
  await sampler.load(modelSpec(cfg, base, {}));
  const sample = { responseTokens: cfg.rm.responseTokens, temperature: cfg.rm.temperature };
  const pairs = await goldPairs(sampler, gold, prefixes, pad, { ...sample, seed: 777 + cfg.data.publicSeed });
  const heldOut = await goldPairs(sampler, gold, heldOutPrefixes, pad, { ...sample, seed: 778 + cfg.data.publicSeed });
  await sampler.unload();

  const rm = new RewardModel(api, "eval-rm-train");
  // A judge should be as good as public data makes it: the tiny model is fine-tuned whole (seconds;
  // LoRA on its 2 layers stays near 60% on the n-gram labeller's pairs, all weights reach about 70%),
  // a Hugging Face model through LoRA, which keeps its memory bounded.
  const full = cfg.model.kind === "tiny";
  await rm.load(modelSpec(cfg, base, { lora: !full, trainBase: full, rewardHead: true, rewardPooling: cfg.rm.pooling, initSeed: cfg.data.publicSeed }), adamw(0.01));
  const rng = new SeededRng(`eval-rm/${cfg.data.publicSeed}`);
  const n = pairs.chosen.length;
  const steps = Math.ceil((EPOCHS * n) / BATCH);
  progress.start("eval RM", steps);
  const nextBatch = cyclingBatches(n, BATCH, rng);
  for (let t = 0; t < steps; t++) {
    const idx = nextBatch();
    await rm.trainPairwise(idx.map((i) => pairs.chosen[i]), idx.map((i) => pairs.rejected[i]), pad, { dp: nonPrivate(idx.length), lr: LR });
    progress.update(t + 1);
  }
  progress.stop();
  const checkpoint = join(dir, "checkpoint");
  await rm.save(checkpoint, { stage: "eval-rm", key });
  const quality = await pairAccuracy(rm, heldOut, pad);
  await rm.unload();
  const result: EvalRmResult = {
    key, checkpoint, heldOutAccuracy: quality.accuracy, trainPairs: n, heldOutPairs: heldOut.chosen.length, wallS: (Date.now() - t0) / 1000, reused: false,
  };
  writeFileSync(doneFile, JSON.stringify(result, null, 2));
  return result;
}

/** The evaluation reward model, loaded for scoring. */
export async function loadEvalRewardModel(api: WorkerApi, cfg: Config, base: BaseModel, r: EvalRmResult): Promise<RewardModel> {
  const model = new RewardModel(api, EVAL_RM_HANDLE);
  await model.load(modelSpec(cfg, base, { rewardHead: true, rewardPooling: cfg.rm.pooling, initCheckpoint: r.checkpoint }));
  return model;
}
