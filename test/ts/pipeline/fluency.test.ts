/**
 * Held-out language-model figures (issue 12): the pretrained model's perplexity on unsup reviews
 * held out from pre-training, and the LM loss on public test reviews before and after DP-SFT.
 * The held-out slices are public, disjoint from every other role, and fixed whatever the other
 * roles' sizes; the figures are computed as the mean NLL per predicted token and reach the run
 * output and report.md, with nothing private beside them.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assignPublicRoles, assignRoles, normalisedText, type ImdbSources } from "../../../ts/pipeline/data/roles.js";
import type { ImdbRecord } from "../../../ts/pipeline/data/jsonl.js";
import { KeyedRng } from "../../../ts/util/keyed-rng.js";
import { DataError } from "../../../ts/util/errors.js";
import { windows } from "../../../ts/pipeline/stages/pretrain.js";
import { countWords, firstWords, heldOutLm } from "../../../ts/pipeline/stages/lm-eval.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { Tensor } from "../../../ts/protocol/tensor.js";
import type { Method, ReplyOf, RequestOf } from "../../../ts/protocol/messages.js";
import type { RpcCaller } from "../../../ts/protocol/rpc.js";
import { WorkerClient } from "../../../ts/transport/client.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { runPipeline } from "../../../ts/pipeline/run.js";
import { modelSpec } from "../../../ts/pipeline/context.js";
import { cleanReview } from "../../../ts/pipeline/data/jsonl.js";
import { LanguageModel } from "../../../ts/worker/roles.js";
import { tokenizeRows } from "../../../ts/pipeline/tokens.js";
import { planRun, IMDB_SIZES } from "../../../ts/pipeline/plan.js";
import { ConfigError } from "../../../ts/util/errors.js";
import { fakeCalibrator, TINY, tmpDir, writeTinyImdb } from "./helpers.js";

const rec = (split: string, i: number, text = `${split} review number ${i} with its own words`): ImdbRecord => ({ id: `${split}/pos/${i}`, text, label: 1, rating: 8 }) as ImdbRecord;
const sources = (): ImdbSources => ({
  train: Array.from({ length: 100 }, (_, i) => rec("train", i)),
  test: Array.from({ length: 80 }, (_, i) => rec("test", i)),
  unsup: Array.from({ length: 80 }, (_, i) => rec("unsup", i)),
});
const sizes = { pretrainDocs: 30, classifierTrain: 10, classifierHeldOut: 5, evalPrompts: 5, privateSize: "all", sftFraction: 0.5, publicSeed: 3, pretrainHeldOut: 12, lmHeldOut: 9 } as const;
const ids = (xs: readonly ImdbRecord[]) => xs.map((x) => x.id);

describe("held-out public slices", () => {
  it("are disjoint from the corpus and every other public role, and do not move when those grow", () => {
    const src = sources();
    const r = assignPublicRoles(src, sizes);
    expect(r.pretrainHeldOut).toHaveLength(12);
    expect(r.lmHeldOut).toHaveLength(9);
    const corpus = new Set(ids(r.publicCorpus));
    expect(r.pretrainHeldOut.some((x) => corpus.has(x.id))).toBe(false);
    const otherTest = new Set(ids([...r.classifierTrain, ...r.classifierHeldOut, ...r.evalPrompts, ...r.rmHeldOut]));
    expect(r.lmHeldOut.some((x) => otherTest.has(x.id))).toBe(false);
    expect(r.lmHeldOut.every((x) => x.id.startsWith("test/"))).toBe(true);
    const grown = assignPublicRoles(src, { ...sizes, pretrainDocs: 68, classifierTrain: 40, evalPrompts: 20 });
    expect(ids(grown.pretrainHeldOut)).toEqual(ids(r.pretrainHeldOut));
    expect(ids(grown.lmHeldOut)).toEqual(ids(r.lmHeldOut));
    // the corpus keeps its documents whatever the held-out size (so the pre-training cache key stays)
    expect(ids(assignPublicRoles(src, { ...sizes, pretrainHeldOut: 0 }).publicCorpus)).toEqual(ids(r.publicCorpus));
    expect(() => assignPublicRoles(src, { ...sizes, pretrainDocs: 69 })).toThrow(DataError);
    expect(() => assignPublicRoles(src, { ...sizes, pretrainDocs: "all" }).publicCorpus).not.toThrow();
    expect(assignPublicRoles(src, { ...sizes, pretrainDocs: "all" }).publicCorpus).toHaveLength(68);
    expect(() => assignPublicRoles(src, { ...sizes, classifierTrain: 62 })).toThrow(/data\.lmHeldOut/);
  });

  it("drops a held-out unsup document whose text is also in the corpus", () => {
    const src = sources();
    const r = assignPublicRoles(src, sizes);
    const copied = r.pretrainHeldOut[0];
    const withCopy = { ...src, unsup: src.unsup.map((x) => (x.id === r.publicCorpus[0].id ? { ...x, text: copied.text.toUpperCase() } : x)) };
    const r2 = assignPublicRoles(withCopy, sizes);
    expect(ids(r2.pretrainHeldOut)).toEqual(ids(r.pretrainHeldOut).filter((id) => id !== copied.id));
    const corpusTexts = new Set(r2.publicCorpus.map((x) => normalisedText(x.text)));
    expect(r2.pretrainHeldOut.some((x) => corpusTexts.has(normalisedText(x.text)))).toBe(false);
  });

  it("never enter the private sets (a private review with a held-out text is removed)", () => {
    const src = sources();
    const held = assignPublicRoles(src, sizes).lmHeldOut[0];
    const withCopy = { ...src, train: [...src.train, { ...rec("train", 999), text: held.text }] };
    const roles = assignRoles(withCopy, sizes, new KeyedRng(Buffer.alloc(32, 7)), true);
    expect(roles.privateD.some((x) => x.text === held.text)).toBe(false);
    expect(roles.removed.inPublicSets).toBe(1);
  });
});

describe("the plan's public sizes", () => {
  it("counts the held-out slices: \"all\" unsup reviews are all but the held-out ones, and the test roles must fit with lmHeldOut", () => {
    const cfg = (data: Record<string, unknown>) => parseConfig({ ...TINY, data: { ...TINY.data, ...data } });
    expect(planRun(cfg({ pretrainDocs: "all", pretrainHeldOut: 500 }), fakeCalibrator).sizes.publicCorpus).toBe(IMDB_SIZES.unsup - 500);
    expect(() => planRun(cfg({ pretrainDocs: IMDB_SIZES.unsup, pretrainHeldOut: 1 }), fakeCalibrator)).toThrow(ConfigError);
    expect(() => planRun(cfg({ classifierTrain: IMDB_SIZES.test - 14, lmHeldOut: 1 }), fakeCalibrator)).toThrow(/data\.lmHeldOut/);
    expect(() => planRun(cfg({ classifierTrain: IMDB_SIZES.test - 14, lmHeldOut: 0 }), fakeCalibrator)).not.toThrow();
  });
});

describe("training windows", () => {
  it("cuts each document into consecutive windows, a later one only when at least half full", () => {
    const doc = Array.from({ length: 23 }, (_, i) => i);
    expect(windows([doc], 10, 1)).toEqual([doc.slice(0, 10)]);
    expect(windows([doc], 10, 4)).toEqual([doc.slice(0, 10), doc.slice(10, 20)]); // 3 tokens left: dropped
    expect(windows([doc.slice(0, 15)], 10, 4)).toEqual([doc.slice(0, 10), doc.slice(10, 15)]);
    expect(windows([[5], [1, 2, 3]], 10, 3)).toEqual([[1, 2, 3]]); // a first window needs two tokens to predict one
  });
});

/** Answers scoreSequences with log p(token) = -token / 10 and decode with one word per token. */
class ScoringStub implements RpcCaller {
  async call<M extends Method>(method: M, request: RequestOf<M>): Promise<ReplyOf<M>> {
    if (method === "scoreSequences") {
      const b = (request as RequestOf<"scoreSequences">).batch;
      const rows = b.response_ids.rows(b.response_lengths.toNumbers());
      return { logprobs: Tensor.paddedFloat32(rows.map((r) => r.map((t) => -t / 10)), 0, b.response_ids.shape[1]) } as unknown as ReplyOf<M>;
    }
    if (method === "decode") {
      const b = (request as RequestOf<"decode">).batch;
      return { texts: b.input_ids.rows(b.lengths.toNumbers()).map((r) => r.map((t) => `w${t}`).join(" ")) } as unknown as ReplyOf<M>;
    }
    throw new Error(`ScoringStub: ${method}`);
  }
}

describe("held-out loss", () => {
  it("is the mean NLL per predicted token (every token after a text's first), perplexity its exp", async () => {
    const rows = [[3, 10, 20], [7, 5], [9]];
    const h = await heldOutLm(new WorkerApi(new ScoringStub()), "m", rows, 0);
    // the one-token text predicts nothing; the others predict 10, 20 and 5
    expect(h.texts).toBe(2);
    expect(h.tokens).toBe(3);
    expect(h.loss).toBeCloseTo((1 + 2 + 0.5) / 3, 12);
    expect(h.perplexity).toBeCloseTo(Math.exp(3.5 / 3), 10);
    expect(h.words).toBe(3);
    expect(h.wordPerplexity).toBeCloseTo(Math.exp(3.5 / 3), 10);
  });

  it("counts and cuts words on white space", () => {
    expect(countWords("  a b\n c  ")).toBe(3);
    expect(countWords(" ")).toBe(0);
    expect(firstWords("one two  three four", 2)).toBe("one two");
  });
});

describe("held-out figures of a run (real worker, very small preset)", () => {
  let client: WorkerClient;
  let api: WorkerApi;
  beforeAll(async () => {
    client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
    api = new WorkerApi(client);
  });
  afterAll(async () => {
    await client?.close();
  });

  it("reports perplexity and the SFT loss before and after in the output and report.md, measured on public text only", async () => {
    const dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 50 });
    const cfg = parseConfig({ ...TINY, data: { ...TINY.data, pretrainHeldOut: 8, lmHeldOut: 6 } });
    const runDir = join(tmpDir(), "run");
    const logs: string[] = [];
    const progress = { log: (l: string) => logs.push(l), start: () => undefined, update: () => undefined, stop: () => undefined };
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir: tmpDir("dpalign-cache-"), api, progress });

    const pre = s.pretrain.heldOut!;
    expect(pre.texts).toBe(8);
    expect(pre.perplexity).toBeCloseTo(Math.exp(pre.loss), 6);
    expect(pre.loss).toBeGreaterThan(0);
    const h = s.sft!.heldOut!;
    expect(h.before.texts).toBe(6);
    expect(h.after.texts).toBe(6);
    for (const x of [h.before, h.after]) expect(Number.isFinite(x.loss) && x.loss > 0).toBe(true);

    // "before" is the pretrained model itself on the same public reviews
    const base = new LanguageModel(api, "fluency-check");
    await base.load(modelSpec(cfg, s.pretrain, { lora: false }));
    const roles = JSON.parse(readFileSync(join(runDir, "roles.json"), "utf8"));
    const { data } = await import("../../../ts/pipeline/run.js").then((m) => m.loadData(cfg, dataDir));
    const byId = new Map(data.test.map((r) => [r.id, r]));
    const heldRows = await tokenizeRows(base, (roles.lmHeldOut.ids as string[]).map((id) => cleanReview(byId.get(id)!.text)), cfg.sft.maxTokens);
    const direct = await heldOutLm(api, "fluency-check", heldRows, s.pretrain.padId);
    await base.unload();
    expect(direct.loss).toBeCloseTo(h.before.loss, 5);
    expect((roles.lmHeldOut.ids as string[]).every((id) => id.startsWith("test/"))).toBe(true);

    expect(logs.some((l) => l.includes(`held-out perplexity ${pre.perplexity.toFixed(1)}`))).toBe(true);
    expect(logs.some((l) => l.includes(`${h.before.loss.toFixed(3)} before -> ${h.after.loss.toFixed(3)} after SFT`))).toBe(true);
    const report = readFileSync(join(runDir, "report.md"), "utf8");
    expect(report).toContain("## Language model on public held-out text");
    expect(report).toContain(`| pretrained | unsup reviews, first 32 words | 8 | ${pre.tokens} | ${pre.loss.toFixed(3)} | ${pre.perplexity.toFixed(1)} |`);
    expect(report).toContain(`| sft | test reviews (private distribution), as SFT cuts them | 6 | ${h.after.tokens} | ${h.after.loss.toFixed(3)} |`);
    // nothing of the private sets next to the figures
    const priv = JSON.parse(readFileSync(join(runDir, "private", "roles.json"), "utf8"));
    const released = [report, readFileSync(join(runDir, "stages", "sft.json"), "utf8"), readFileSync(join(runDir, "summary.json"), "utf8")].join("\n");
    for (const id of priv.d1.ids as string[]) expect(released.includes(`"${id}"`) || report.includes(id)).toBe(false);
  }, 180_000);
});
