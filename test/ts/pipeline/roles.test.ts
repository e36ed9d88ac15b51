/**
 * The data roles (DESIGN.md rules 7 and 8): public roles fixed by the public seed; the private
 * split per record under a secret key, after removing private records that repeat public ones.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "node:crypto";
import { assignRoles, dedupPrivate, type ImdbSources } from "../../../ts/pipeline/data/roles.js";
import { KeyedRng } from "../../../ts/util/keyed-rng.js";
import type { ImdbRecord } from "../../../ts/pipeline/data/jsonl.js";
import { DataError } from "../../../ts/util/errors.js";

const rec = (split: string, i: number, text = `${split} review number ${i} with its own words`): ImdbRecord => ({ id: `${split}/pos/${i}`, text, label: 1, rating: 8 }) as ImdbRecord;
const sources = (n: number): ImdbSources => ({
  train: Array.from({ length: n }, (_, i) => rec("train", i)),
  test: Array.from({ length: 60 }, (_, i) => rec("test", i)),
  unsup: Array.from({ length: 60 }, (_, i) => rec("unsup", i)),
});
const sizes = { pretrainDocs: 30, classifierTrain: 10, classifierHeldOut: 5, evalPrompts: 5, privateSize: "all", sftFraction: 0.5, publicSeed: 3 } as const;
const key = () => new KeyedRng(randomBytes(32));
const stageOf = (r: ReturnType<typeof assignRoles>) => new Map([...r.d1.map((x) => [x.id, "d1"] as const), ...r.d3.map((x) => [x.id, "d3"] as const)]);

describe("private stage split", () => {
  it("assigns each record by its own keyed coin: adding or removing one record moves no other record", () => {
    const k = key();
    const src = sources(2000);
    const base = stageOf(assignRoles(src, sizes, k, true));
    const removed = stageOf(assignRoles({ ...src, train: src.train.filter((_, i) => i !== 17) }, sizes, k, true));
    const added = stageOf(assignRoles({ ...src, train: [...src.train, rec("train", 5000)] }, sizes, k, true));
    for (const [id, stage] of base) {
      if (id !== "train/pos/17") expect(removed.get(id)).toBe(stage);
      expect(added.get(id)).toBe(stage);
    }
    expect(added.size).toBe(base.size + 1);
  });

  it("is disjoint, follows the key, and has binomial sizes around the planned ones", () => {
    const src = sources(4000);
    const k = key();
    const r = assignRoles(src, sizes, k, true);
    const d1 = new Set(r.d1.map((x) => x.id));
    expect(r.d3.some((x) => d1.has(x.id))).toBe(false);
    expect(r.d1.length + r.d3.length).toBe(4000);
    // |D1| ~ Binomial(4000, 0.5): within 5 standard deviations (sd 31.6)
    expect(Math.abs(r.d1.length - 2000)).toBeLessThan(160);
    expect(assignRoles(src, sizes, k, true).d1.map((x) => x.id)).toEqual(r.d1.map((x) => x.id));
    expect(assignRoles(src, sizes, key(), true).d1.map((x) => x.id)).not.toEqual(r.d1.map((x) => x.id));
    // a planned |D| below the pool: each record enters D with probability privateSize / |train|
    const sub = assignRoles(src, { ...sizes, privateSize: 1000 }, k, true);
    expect(Math.abs(sub.privateD.length - 1000)).toBeLessThan(5 * Math.sqrt(4000 * 0.25 * 0.75));
    expect(sub.d1.every((x) => d1.has(x.id))).toBe(true); // same coins: D1 of the subset lies inside the full D1
  });

  it("keeps the public roles fixed by the public seed, whatever the key", () => {
    const src = sources(200);
    const a = assignRoles(src, sizes, key(), true);
    const b = assignRoles(src, sizes, key(), true);
    expect(a.evalPrompts.map((x) => x.id)).toEqual(b.evalPrompts.map((x) => x.id));
    expect(a.classifierTrain.map((x) => x.id)).toEqual(b.classifierTrain.map((x) => x.id));
    const ids = [...a.classifierTrain, ...a.classifierHeldOut, ...a.evalPrompts].map((x) => x.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("uses all of D for both stages when they are not disjoint", () => {
    const r = assignRoles(sources(300), sizes, key(), false);
    expect(r.d1).toHaveLength(300);
    expect(r.d3).toBe(r.d1);
  });

  it("refuses sizes larger than the data", () => {
    expect(() => assignRoles(sources(40), { ...sizes, privateSize: 41 }, key(), true)).toThrow(/data.privateSize/);
    expect(() => assignRoles(sources(40), { ...sizes, classifierTrain: 59 }, key(), true)).toThrow(DataError);
  });
});

describe("de-duplication of the private set", () => {
  it("removes private records whose normalised text is public, keeps one of repeated private texts, and counts both", () => {
    const src = sources(10);
    src.train.push(rec("train", 100, src.test[3].text.toUpperCase() + "<br />"));
    src.train.push(rec("train", 101, "  " + src.unsup[7].text));
    src.train.push(rec("train", 103, "a private text said twice"));
    src.train.push(rec("train", 102, "A private   text said twice"));
    const { kept, removed } = dedupPrivate(src);
    expect(removed).toEqual({ inPublicSets: 2, repeatedPrivate: 1 });
    expect(kept.map((x) => x.id)).toContain("train/pos/102");
    expect(kept.map((x) => x.id)).not.toContain("train/pos/103");
    expect(kept).toHaveLength(11);
    const r = assignRoles(src, sizes, key(), true);
    expect(r.removed).toEqual(removed);
    expect(r.privateD.some((x) => x.id === "train/pos/100")).toBe(false);
  });

  it("refuses duplicate ids", () => {
    const src = sources(10);
    src.train.push(rec("train", 3, "another text"));
    expect(() => dedupPrivate(src)).toThrow(/id "train\/pos\/3" appears more than once/);
  });
});
