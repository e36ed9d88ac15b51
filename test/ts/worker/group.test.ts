/**
 * WorkerGroup: how batches are split and joined, how step reports are checked, and a real group of
 * two Python workers (gloo) against one worker: same scores, identical ranks, a dead rank named.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TrainStepReply } from "../../../ts/protocol/messages.js";
import { Tensor } from "../../../ts/protocol/tensor.js";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerCrashedError } from "../../../ts/transport/errors.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { lmBatch, queryResponseBatch } from "../../../ts/worker/batches.js";
import { batchRows, concatRows, contiguousParts, mergeStepReplies, rowWeights, splitByTokens, takeRows, WorkerGroup } from "../../../ts/worker/group.js";

describe("splitting and joining batches", () => {
  it("splits rows by token count, every row exactly once, each share in batch order", () => {
    const w = [10, 1, 1, 1, 9, 1, 1, 2];
    const shares = splitByTokens(w, 2);
    expect(shares.flat().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const s of shares) expect(s).toEqual([...s].sort((a, b) => a - b));
    const load = shares.map((s) => s.reduce((a, i) => a + w[i], 0));
    expect(Math.abs(load[0] - load[1])).toBeLessThanOrEqual(1);
    // more ranks than rows: the extra ranks get empty shares (they still take part in the step)
    expect(splitByTokens([3], 3)).toEqual([[0], [], []]);
    expect(splitByTokens([], 2)).toEqual([[], []]);
  });

  it("weighs rows by their lengths tensors", () => {
    const b = lmBatch([[1, 2, 3], [4], [5, 6]], 0);
    expect(batchRows(b)).toBe(3);
    expect(rowWeights(b, 3)).toEqual([4, 2, 3]);
    expect(batchRows({})).toBe(0);
  });

  it("cuts rows into contiguous parts and stacks replies of different widths back in order", () => {
    expect(contiguousParts(5, 2)).toEqual([[0, 1, 2], [3, 4]]);
    expect(contiguousParts(1, 4)).toEqual([[0]]);
    const t = Tensor.paddedInt64([[1, 2, 3], [4], [5, 6], [7]], 0);
    const parts = [takeRows(t, [0, 1]), takeRows(t, [2, 3])];
    expect(parts[1].rows()).toEqual([[5, 6, 0], [7, 0, 0]]);
    const narrow = Tensor.paddedInt64([[5, 6], [7]], 0);
    const joined = concatRows([parts[0], narrow]);
    expect(joined.shape).toEqual([4, 3]);
    expect(joined.rows()).toEqual(t.rows());
    expect(concatRows([Tensor.float32([1, 2]), Tensor.float32([3])]).toNumbers()).toEqual([1, 2, 3]);
  });
});

describe("checking the ranks' step reports", () => {
  const rep = (rank: number, share: number, added: boolean, extra: Partial<TrainStepReply> = {}): TrainStepReply => ({
    step: 3, examples: 5, loss: rank + 1, gradNormQuantiles: [rank, 1, 2, 3, 4 + rank], fractionClipped: rank, noiseMultiplier: 1,
    maxGradNorm: 1, dp: true, noiseMode: "seeded", noiseSeed: 7, noiseStd: 1, metrics: { m: rank }, rankExamples: share, addedNoise: added,
    rank, worldSize: 2, ...extra,
  });

  it("merges two ranks into one report of the whole batch, statistics weighted by share", () => {
    const r = mergeStepReplies([rep(0, 3, true), rep(1, 2, false)], 5, true);
    expect(r.examples).toBe(5);
    expect(r.addedNoise).toBe(true);
    expect(r.loss).toBeCloseTo((3 * 1 + 2 * 2) / 5);
    expect(r.fractionClipped).toBeCloseTo(2 / 5);
    expect(r.metrics.m).toBeCloseTo(2 / 5);
    expect(r.gradNormQuantiles[0]).toBe(0);
    expect(r.gradNormQuantiles[4]).toBe(5);
  });

  it("refuses noise added twice or not at all, shares that miss rows, and another count", () => {
    expect(() => mergeStepReplies([rep(0, 3, true), rep(1, 2, true)], 5, true)).toThrow(/2 ranks added noise/);
    expect(() => mergeStepReplies([rep(0, 3, false), rep(1, 2, false)], 5, true)).toThrow(/0 ranks added noise/);
    expect(() => mergeStepReplies([rep(0, 3, true), rep(1, 2, false)], 5, false)).toThrow(/none must/);
    expect(() => mergeStepReplies([rep(0, 3, true), rep(1, 1, false)], 5, true)).toThrow(/do not add up/);
    expect(() => mergeStepReplies([rep(0, 3, true), rep(1, 2, false, { examples: 4 })], 5, true)).toThrow(/4 examples, 5 were sampled/);
    expect(() => mergeStepReplies([rep(0, 3, true), rep(1, 2, false, { step: 2 })], 5, true)).toThrow(/at step 2/);
  });
});

describe("a group of two workers", () => {
  let group: WorkerGroup;
  let single: WorkerClient;
  let tokDir: string;
  const texts = ["the movie was great and the acting was wonderful", "a terrible film with a boring plot", "i loved every minute of it", "the worst movie of the year", "an average film"];

  const spec = () => ({ tiny: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 32, tokenizerDir: tokDir }, lora: { rank: 2, alpha: 4, targetModules: ["c_attn"] }, initSeed: 3 });

  beforeAll(async () => {
    [group, single] = await Promise.all([WorkerGroup.spawn(2, { torchThreads: 1, threads: 2, timeoutS: 30 }), WorkerClient.spawn({ threads: 2, env: { OMP_NUM_THREADS: "1" } })]);
    tokDir = mkdtempSync(join(tmpdir(), "dpalign-group-tok-"));
    await new WorkerApi(group).trainTokenizer({ texts: texts.concat(texts), vocabSize: 300, outDir: tokDir });
  });
  afterAll(async () => {
    await Promise.all([group?.close(), single?.close()]);
  });

  it("loads on every rank, steps with the noise added once, and keeps the ranks identical", async () => {
    const g = new WorkerApi(group);
    await g.loadModel({ handle: "lm", spec: spec(), optimizer: { name: "adamw", lr: 1e-2 } });
    const ids = await g.tokenize({ handle: "lm", texts, maxTokens: 16 });
    const rows = ids.input_ids.rows(ids.lengths.toNumbers());
    for (let step = 0; step < 2; step++) {
      const r = await g.trainStep({
        handle: "lm", loss: "causal_lm", batch: lmBatch(rows, 0), lr: 1e-2,
        dp: { enabled: true, noiseMultiplier: 1, maxGradNorm: 0.5, expectedBatchSize: 5, secureNoise: false, noiseSeed: 9 },
      });
      expect([r.examples, r.rankExamples, r.addedNoise, r.worldSize, r.noiseMode]).toEqual([5, 5, true, 2, "seeded"]);
    }
    // an empty logical batch is a valid step: both ranks take part, rank 0 adds the noise
    const e = await g.trainStep({ handle: "lm", loss: "causal_lm", batch: lmBatch([], 0), lr: 1e-2, dp: { enabled: true, noiseMultiplier: 1, maxGradNorm: 0.5, expectedBatchSize: 5, secureNoise: true } });
    expect([e.examples, e.addedNoise, e.noiseMode]).toEqual([0, true, "secure"]);
    const h = await group.call("trainableHash", { handle: "lm" }); // every rank's digest, checked equal
    expect(h.step).toBe(3);
    const dir = mkdtempSync(join(tmpdir(), "dpalign-group-ckpt-"));
    await g.saveCheckpoint({ handle: "lm", dir }); // compares every rank's digest first
    expect((await g.loadCheckpoint({ handle: "lm", dir })).step).toBe(3);
  });

  it("scores rows split over the ranks as one worker scores them all", async () => {
    const g = new WorkerApi(group);
    const s = new WorkerApi(single);
    await Promise.all([g.loadModel({ handle: "ref", spec: spec() }), s.loadModel({ handle: "ref", spec: spec() })]);
    const ids = await s.tokenize({ handle: "ref", texts, maxTokens: 16 });
    const rows = ids.input_ids.rows(ids.lengths.toNumbers());
    const batch = queryResponseBatch(rows.map((r) => r.slice(0, 2)), rows.map((r) => r.slice(2)), 0);
    const [a, b] = await Promise.all([g.scoreSequences({ handle: "ref", batch, logprobs: true }), s.scoreSequences({ handle: "ref", batch, logprobs: true })]);
    expect(a.logprobs.shape).toEqual(b.logprobs.shape);
    const lens = rows.map((r) => r.length - 2);
    const ra = a.logprobs.rows(lens).flat();
    const rb = b.logprobs.rows(lens).flat();
    ra.forEach((v, i) => expect(v).toBeCloseTo(rb[i], 4));
    const gen = await g.generate({ handle: "ref", prompts: { input_ids: Tensor.paddedInt64(rows, 0), lengths: Tensor.int64(rows.map((r) => r.length)) }, maxNewTokens: 3, temperature: 0, seed: 1, returnLogprobs: true });
    expect(gen.texts).toHaveLength(5);
    expect(gen.batch.response_ids.shape[0]).toBe(5);
  });

  it("fails with the rank's name when a worker dies, and refuses further calls", async () => {
    const g = new WorkerApi(group);
    process.kill(group.ranks[1].pid!, "SIGKILL");
    const t0 = Date.now();
    const err = await g.trainStep({
      handle: "lm", loss: "causal_lm", batch: lmBatch([[1, 2, 3]], 0), lr: 1e-2,
      dp: { enabled: true, noiseMultiplier: 1, maxGradNorm: 0.5, expectedBatchSize: 5, secureNoise: true },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect((err as Error).message).toMatch(/worker rank 1 of 2/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    expect(group.state).toBe("crashed");
    await expect(g.ping()).rejects.toThrow(/worker rank 1 of 2/);
  });
});

describe("a rendezvous that cannot complete", () => {
  it("fails within the timeout, naming the rank, instead of hanging", async () => {
    // rank 1 has one request thread, busy: its join request waits behind it, and rank 0's rendezvous times out
    const clients = await Promise.all([WorkerClient.spawn({ threads: 1 }), WorkerClient.spawn({ threads: 1 })]);
    try {
      const busy = clients[1].call("echo", { sleepMs: 8_000 }).catch(() => undefined);
      const t0 = Date.now();
      const err = await WorkerGroup.fromClients(clients, { timeoutS: 2 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkerCrashedError);
      expect((err as Error).message).toMatch(/worker rank 0 of 2 could not join the process group \(gloo at 127\.0\.0\.1:\d+, timeout 2 s\)/);
      expect(Date.now() - t0).toBeLessThan(7_500);
      await busy;
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});
