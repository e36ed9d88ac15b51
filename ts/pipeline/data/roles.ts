/**
 * The data roles of Scenario 1, fixed by a seed (DESIGN.md: the split is the control plane's):
 * - public pre-training corpus: unsup (unlabeled);
 * - public labeled set for the reward classifier, and a held-out labeled set for its accuracy:
 *   disjoint slices of test;
 * - private D: train (or a seeded subset of it), split into disjoint D1 (SFT) and D3 (PPO
 *   prompts) in DP mode; non-private runs use all of D for both, as the paper does;
 * - evaluation prompts: a further disjoint slice of test.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { SeededRng } from "../../util/rng.js";
import { DataError, InvalidArgumentError } from "../../util/errors.js";
import { imdbValidator, readJsonl, type ImdbRecord } from "./jsonl.js";

export interface RoleSizes {
  /** Public pre-training documents from unsup; "all" for every one. */
  pretrainDocs: number | "all";
  classifierTrain: number;
  classifierHeldOut: number;
  evalPrompts: number;
  /** |D|: how many train reviews form the private set; "all" for 25,000. */
  privateSize: number | "all";
  /** Fraction of D that goes to D1 (SFT) in DP mode; the rest is D3 (PPO). */
  sftFraction: number;
  /** Seed of the public roles; the private split uses the run seed. Default: the run seed. */
  publicSeed?: number;
}

export interface ImdbSources {
  train: ImdbRecord[];
  test: ImdbRecord[];
  unsup: ImdbRecord[];
}

export interface Roles {
  seed: string;
  publicCorpus: ImdbRecord[];
  classifierTrain: ImdbRecord[];
  classifierHeldOut: ImdbRecord[];
  evalPrompts: ImdbRecord[];
  /** The private D. */
  privateD: ImdbRecord[];
  d1: ImdbRecord[];
  d3: ImdbRecord[];
  /** true when D1 and D3 are disjoint halves (DP mode); false when both are all of D. */
  disjoint: boolean;
}

export async function loadImdb(dataDir: string, opts: { unsupLimit?: number } = {}): Promise<ImdbSources> {
  const dir = join(dataDir, "imdb");
  const [train, test, unsup] = await Promise.all([
    readJsonl(join(dir, "train.jsonl.gz"), imdbValidator(true)),
    readJsonl(join(dir, "test.jsonl.gz"), imdbValidator(true)),
    readJsonl(join(dir, "unsup.jsonl.gz"), imdbValidator(false), opts.unsupLimit),
  ]);
  return { train, test, unsup };
}

function take(n: number | "all", available: number, field: string): number {
  if (n === "all") return available;
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(field, `must be a non-negative integer or "all", got ${n}`);
  if (n > available) throw new DataError(`${field} = ${n}, but only ${available} records are available`);
  return n;
}

/** Splits the sources into roles. `disjoint` decides whether D1 and D3 are disjoint. Pure given the seed. */
export function assignRoles(src: ImdbSources, sizes: RoleSizes, seed: string | number, disjoint: boolean): Roles {
  const rng = new SeededRng(`imdb-roles/${seed}`);
  const pub = new SeededRng(`imdb-roles/${sizes.publicSeed ?? seed}`);
  const unsup = pub.fork("unsup").shuffle(src.unsup);
  const test = pub.fork("test").shuffle(src.test);
  const train = rng.fork("train").shuffle(src.train);

  const nPre = take(sizes.pretrainDocs, unsup.length, "data.pretrainDocs");
  const nTestNeeded = sizes.classifierTrain + sizes.classifierHeldOut + sizes.evalPrompts;
  take(nTestNeeded, test.length, "data.classifierTrain + data.classifierHeldOut + data.evalPrompts");
  const nD = take(sizes.privateSize, train.length, "data.privateSize");
  if (!(sizes.sftFraction > 0 && sizes.sftFraction < 1)) {
    throw new InvalidArgumentError("data.sftFraction", `must be strictly between 0 and 1, got ${sizes.sftFraction}`);
  }

  let o = 0;
  const classifierTrain = test.slice(o, (o += sizes.classifierTrain));
  const classifierHeldOut = test.slice(o, (o += sizes.classifierHeldOut));
  const evalPrompts = test.slice(o, (o += sizes.evalPrompts));
  const privateD = train.slice(0, nD);
  const n1 = Math.round(privateD.length * sizes.sftFraction);
  return {
    seed: String(seed),
    publicCorpus: unsup.slice(0, nPre),
    classifierTrain,
    classifierHeldOut,
    evalPrompts,
    privateD,
    d1: disjoint ? privateD.slice(0, n1) : privateD,
    d3: disjoint ? privateD.slice(n1) : privateD,
    disjoint,
  };
}

/** A compact record of the roles for the run directory: sizes and a hash of each role's ids. */
export function describeRoles(r: Roles): Record<string, { size: number; idsSha256: string }> & { seed: string; disjoint: boolean } {
  const h = (xs: ImdbRecord[]) => createHash("sha256").update(xs.map((x) => x.id).join("\n")).digest("hex").slice(0, 16);
  const entry = (xs: ImdbRecord[]) => ({ size: xs.length, idsSha256: h(xs) });
  return {
    seed: r.seed,
    disjoint: r.disjoint,
    publicCorpus: entry(r.publicCorpus),
    classifierTrain: entry(r.classifierTrain),
    classifierHeldOut: entry(r.classifierHeldOut),
    evalPrompts: entry(r.evalPrompts),
    privateD: entry(r.privateD),
    d1: entry(r.d1),
    d3: entry(r.d3),
  } as never;
}

/** The ids of every role, for runs that want the full record (written to roles.json). */
export function roleIds(r: Roles): Record<string, string[]> {
  const ids = (xs: ImdbRecord[]) => xs.map((x) => x.id);
  return {
    classifierTrain: ids(r.classifierTrain),
    classifierHeldOut: ids(r.classifierHeldOut),
    evalPrompts: ids(r.evalPrompts),
    d1: ids(r.d1),
    d3: ids(r.d3),
  };
}
