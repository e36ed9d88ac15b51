/**
 * The public reward stage over a real worker (seconds): the n-gram classifier trained on tiny
 * IMDb-shaped reviews, measured on whole held-out reviews and on short windows, cached, and
 * scoring short completions sensibly; and the config's checks of each reward kind.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { silentProgress } from "../../../ts/pipeline/progress.js";
import { assignPublicRoles, loadImdb } from "../../../ts/pipeline/data/roles.js";
import { describeReward, loadRewardModel, trainRewardClassifier } from "../../../ts/pipeline/stages/reward.js";
import { ConfigError } from "../../../ts/util/errors.js";
import { runPipeline } from "../../../ts/pipeline/run.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

let client: WorkerClient;
let api: WorkerApi;
let tokenizerDir: string;
let pad: number;

const CORPUS = [
  "this movie was great and wonderful, I loved it", "the worst film, boring and awful", "an excellent cast and the best fun",
  "a terrible waste of time, bad acting", "I think it was great", "I think it was awful", "the movie review",
];

beforeAll(async () => {
  client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
  api = new WorkerApi(client);
  tokenizerDir = join(tmpDir(), "tok");
  await api.trainTokenizer({ texts: CORPUS.flatMap((t) => [t, t.toUpperCase()]), vocabSize: 300, outDir: tokenizerDir });
  const info = await api.loadModel({ handle: "probe", spec: { ngram: { buckets: 16, maxN: 1, tokenizerDir } } });
  pad = info.padTokenId;
  await api.unloadModel("probe");
});
afterAll(async () => {
  await client?.close();
});

describe("reward.kind ngram", () => {
  it("learns sentiment from whole public reviews, reports whole and short-window accuracy, scores short completions sensibly, and is cached", async () => {
    const dataDir = writeTinyImdb(tmpDir(), { train: 4, test: 160, unsup: 4 });
    const cfg = parseConfig({
      data: { classifierTrain: 120, classifierHeldOut: 30, evalPrompts: 10, privateSize: 2 },
      reward: { shortWindow: 8, ngram: { buckets: 4096, epochs: 20, batchSize: 32, lr: 0.3 } },
    });
    expect(cfg.reward.kind).toBe("ngram"); // the default
    const pub = assignPublicRoles(await loadImdb(dataDir), { ...cfg.data, pretrainDocs: 1, rmHeldOut: 0, lmHeldOut: 0 });
    const base = { tokenizerDir, checkpoint: "", padId: pad, eosId: 0 };
    const cacheDir = tmpDir("dpalign-cache-");
    const r = await trainRewardClassifier(api, cfg, base, pub.classifierTrain, pub.classifierHeldOut, cacheDir, silentProgress);
    expect(r.kind).toBe("ngram");
    expect(r.reused).toBe(false);
    expect(r.trainSize).toBe(120);
    expect(r.heldOutSize).toBe(30);
    // the tiny reviews are separable by their sentiment words, in whole and in their last 8 tokens
    expect(r.heldOutAccuracy).toBeGreaterThanOrEqual(0.9);
    expect(r.shortWindowTokens).toBe(8);
    expect(r.shortWindowAccuracy).toBeGreaterThanOrEqual(0.8);
    expect(r.trainS).toBeGreaterThan(0);
    expect(existsSync(join(r.checkpoint, "weights.safetensors"))).toBe(true);
    expect(JSON.parse(readFileSync(join(r.checkpoint, "manifest.json"), "utf8")).source).toHaveProperty("ngram");
    expect(describeReward(r)).toMatch(/n-gram classifier\): held-out accuracy \d+\.\d% on whole 30 public reviews, \d+\.\d% on their last 8 tokens; trained on 120/);

    const rm = await loadRewardModel(api, cfg, base, r);
    const texts = ["great and wonderful", "I loved it, excellent", "boring and awful", "a terrible waste"];
    const s = await rm.score(await rm.tokenize(texts, 0), pad);
    expect(Math.min(s[0], s[1])).toBeGreaterThan(Math.max(s[2], s[3]));
    expect(s[0]).toBeGreaterThan(0);
    expect(s[2]).toBeLessThan(0);
    await rm.unload();

    const again = await trainRewardClassifier(api, cfg, base, pub.classifierTrain, pub.classifierHeldOut, cacheDir, silentProgress);
    expect(again.reused).toBe(true);
    expect(again.heldOutAccuracy).toBe(r.heldOutAccuracy);
    // another n-gram setting is another classifier
    const other = parseConfig({ ...cfg, reward: { ...cfg.reward, ngram: { ...cfg.reward.ngram, maxN: 1 } } });
    const r1 = await trainRewardClassifier(api, other, base, pub.classifierTrain, pub.classifierHeldOut, cacheDir, silentProgress);
    expect(r1.reused).toBe(false);
    expect(r1.key).not.toBe(r.key);
  }, 120_000);
});

describe("reward.kind python and hf", () => {
  it("calls the user's function inside the worker with prompts and completions apart, measured like the classifiers", async () => {
    const dataDir = writeTinyImdb(tmpDir(), { train: 4, test: 60, unsup: 4 });
    const modDir = tmpDir("dpalign-pyreward-");
    writeFileSync(join(modDir, "my_sentiment.py"), [
      "POS = {'great', 'wonderful', 'loved', 'excellent', 'best', 'fun'}",
      "NEG = {'awful', 'boring', 'worst', 'terrible', 'bad', 'waste'}",
      "def words(t):",
      "    return [w.strip('.,!') for w in t.lower().split()]",
      "def score(prompts, completions):",
      "    return [sum((w in POS) - (w in NEG) for w in words(c)) + 0.001 * len(p) for p, c in zip(prompts, completions)]",
    ].join("\n"));
    const cfg = parseConfig({
      data: { classifierTrain: 10, classifierHeldOut: 40, evalPrompts: 10, privateSize: 2 },
      reward: { kind: "python", function: "my_sentiment:score", pythonPath: [modDir], shortWindow: 6 },
    });
    const pub = assignPublicRoles(await loadImdb(dataDir), { ...cfg.data, pretrainDocs: 1, rmHeldOut: 0, lmHeldOut: 0 });
    const base = { tokenizerDir, checkpoint: "", padId: pad, eosId: 0 };
    const r = await trainRewardClassifier(api, cfg, base, pub.classifierTrain, pub.classifierHeldOut, tmpDir(), silentProgress);
    expect(r).toMatchObject({ kind: "python", checkpoint: "", trainSize: 0, heldOutSize: 40, shortWindowTokens: 6, reused: false });
    expect(r.heldOutAccuracy).toBe(1);
    expect(describeReward(r)).toMatch(/^reward \(Python reward function\): held-out accuracy 100\.0% on whole 40 public reviews/);
    const rm = await loadRewardModel(api, cfg, base, r);
    const q = await rm.tokenize(["the movie", "a film"], 0);
    const c = await rm.tokenize([" was great and fun", " was bad"], 0);
    const s = await rm.scorePairs(q, c, pad);
    expect(s[0]).toBeCloseTo(2 + 0.001 * "the movie".length, 6);
    expect(s[1]).toBeCloseTo(-1 + 0.001 * "a film".length, 6);
    await rm.unload();
  }, 60_000);

  it("drives a whole run: PPO's rollouts and the evaluation are scored by the function, prompts and completions apart", async () => {
    const dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
    const modDir = tmpDir("dpalign-pyreward-");
    // the score says how the function was called: the completion's length, +500 when a prompt came apart
    writeFileSync(join(modDir, "run_reward.py"), [
      "def score(prompts, completions):",
      "    return [1000.0 + len(c) + (500.0 if p else 0.0) for p, c in zip(prompts, completions)]",
    ].join("\n"));
    const cfg = parseConfig({ ...TINY, reward: { kind: "python", function: "run_reward:score", pythonPath: [modDir] } });
    const runDir = join(tmpDir(), "run");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir: tmpDir("dpalign-cache-"), api });
    expect(s.reward).toMatchObject({ kind: "python", trainSize: 0 });
    const samples = readFileSync(join(runDir, "samples.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { completion: string; reward: number });
    expect(samples.length).toBeGreaterThan(0);
    for (const sm of samples) expect(sm.reward).toBeCloseTo(1500 + sm.completion.length, 3);
    for (const e of s.evals) expect(e.meanReward).toBeGreaterThan(1500);
    // PPO's rollouts too (their rewards are private statistics: private/metrics.jsonl only)
    const ppo = readFileSync(join(runDir, "private", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { stage: string; rollouts?: number; meanScore?: number }).filter((m) => m.stage === "ppo" && (m.rollouts ?? 0) > 0);
    expect(ppo.length).toBeGreaterThan(0);
    for (const m of ppo) expect(m.meanScore).toBeGreaterThan(1500);
    expect(readFileSync(join(runDir, "report.md"), "utf8")).toMatch(/Public reward \(Python reward function\): held-out accuracy/);
  }, 120_000);

  it("stops with the worker's message when reward.path is neither a directory nor a cached id", async () => {
    const cfg = parseConfig({ data: { classifierTrain: 10, classifierHeldOut: 4, evalPrompts: 2, privateSize: 2 }, reward: { kind: "hf", path: join(tmpDir(), "missing-model"), labelIndex: 2 } });
    const base = { tokenizerDir, checkpoint: "", padId: pad, eosId: 0 };
    await expect(trainRewardClassifier(api, cfg, base, [], [{ id: "t/0", text: "great", label: 1 }], tmpDir(), silentProgress))
      .rejects.toThrow(/reward classifier \(reward\.path\) '.*missing-model': no such directory/);
    await expect(trainRewardClassifier(api, parseConfig({ ...cfg, reward: { ...cfg.reward, path: "someorg/not-cached-model" } }), base, [], [], tmpDir(), silentProgress))
      .rejects.toThrow(/'someorg\/not-cached-model' is not a local directory .* and not a Hugging Face id in the local cache .*huggingface-cli download someorg\/not-cached-model/);
  }, 60_000);
});

describe("reward config", () => {
  const issues = (reward: unknown) => {
    try {
      parseConfig({ reward });
      return "";
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message;
    }
  };
  it("names the missing field of each kind, and the renamed kind", () => {
    expect(issues({ kind: "hf" })).toMatch(/reward\.path: required when reward\.kind is "hf"/);
    expect(issues({ kind: "python" })).toMatch(/reward\.function: required when reward\.kind is "python"/);
    expect(issues({ kind: "python", function: "not a function" })).toMatch(/reward\.function: expected package\.module:function/);
    expect(issues({ kind: "classifier" })).toMatch(/reward\.kind: "classifier" was renamed: use "transformer"/);
    expect(issues({ ngram: { maxN: 9 } })).toMatch(/reward\.ngram\.maxN/);
    expect(issues({ kind: "transformer" })).toBe("");
    expect(issues({ kind: "hf", path: "some/dir", labelIndex: 2 })).toBe("");
  });
});
