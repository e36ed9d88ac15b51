/**
 * The data roles of Scenario 1 (DESIGN.md rules 7 and 8):
 * - public roles, fixed by the recorded `data.publicSeed`: the pre-training corpus (unsup), and
 *   disjoint slices of test for the reward classifier, its held-out accuracy and the evaluation prompts;
 * - the private D (train): first every record whose normalised text also appears in a public set,
 *   or repeats another private record, is removed; then each remaining record goes to D1 (SFT),
 *   D3 (PPO prompts) or no stage by a keyed hash of its id under the run's secret key. A record's
 *   stage depends on nothing but its own id and the key, so adding or removing one record changes
 *   only that record's stage: the condition for parallel composition of the stages. The realised
 *   sizes are private; the plan uses the planned sizes from the config.
 * Non-private runs and sequential composition use all of D in both stages.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { SeededRng } from "../../util/rng.js";
import type { KeyedRng } from "../../util/keyed-rng.js";
import { DataError, InvalidArgumentError } from "../../util/errors.js";
import { cleanReview, imdbValidator, readJsonl, type ImdbRecord } from "./jsonl.js";
import type { PreferencePair } from "./preferences.js";

export interface RoleSizes {
  /** Public pre-training documents from unsup; "all" for every one. */
  pretrainDocs: number | "all";
  classifierTrain: number;
  classifierHeldOut: number;
  evalPrompts: number;
  /** |D| planned: each train record enters D with probability privateSize / |train|; "all" for every one. */
  privateSize: number | "all";
  /** Probability that a record of D goes to D1 (SFT) in DP mode; otherwise it goes to D3 (PPO). */
  sftFraction: number;
  /** With three stages (scenario rlhf): probability that a record of D goes to D2 (reward-model pairs). */
  rmFraction?: number;
  /** With three stages: public held-out prefixes (from test) for the reward model's accuracy. */
  rmHeldOut?: number;
  /**
   * Public unsup documents set aside (from the end of the public shuffle, never in the pre-training
   * corpus or the tokenizer's documents) to measure the pretrained model's held-out perplexity.
   */
  pretrainHeldOut?: number;
  /**
   * Public test reviews (the last of the public test shuffle, disjoint from every other test role) that measure the language-model loss on
   * private-distribution text before and after DP-SFT; never used by the classifier or the evaluation.
   */
  lmHeldOut?: number;
  /** Seed of the public roles (recorded; public roles need no secrecy). */
  publicSeed?: number;
}

export interface ImdbSources {
  train: ImdbRecord[];
  test: ImdbRecord[];
  unsup: ImdbRecord[];
}

export interface PublicRoles {
  publicSeed: number;
  publicCorpus: ImdbRecord[];
  classifierTrain: ImdbRecord[];
  classifierHeldOut: ImdbRecord[];
  evalPrompts: ImdbRecord[];
  /** Public prefixes whose gold-labelled pairs measure a reward model (scenario rlhf; else empty). */
  rmHeldOut: ImdbRecord[];
  /** Public unsup documents for the pretrained model's held-out perplexity (disjoint from publicCorpus; may be empty). */
  pretrainHeldOut: ImdbRecord[];
  /** Public test reviews for the held-out LM loss before and after SFT (may be empty). */
  lmHeldOut: ImdbRecord[];
}

export interface Roles extends PublicRoles {
  /** The private D after de-duplication (private: its size and membership are never released). */
  privateD: ImdbRecord[];
  d1: ImdbRecord[];
  /** Reward-model pairs' prefixes (scenario rlhf; else empty). */
  d2: ImdbRecord[];
  d3: ImdbRecord[];
  /** true when D1 and D3 are disjoint (DP mode, parallel composition); false when both are all of D. */
  disjoint: boolean;
  /** Records removed from the private set before the split (private counts). */
  removed: { inPublicSets: number; repeatedPrivate: number };
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

/** The public roles, fixed by `sizes.publicSeed`. */
export function assignPublicRoles(src: ImdbSources, sizes: RoleSizes): PublicRoles {
  const publicSeed = sizes.publicSeed ?? 0;
  const pub = new SeededRng(`imdb-roles/${publicSeed}`);
  const unsup = pub.fork("unsup").shuffle(src.unsup);
  const test = pub.fork("test").shuffle(src.test);
  // The held-out unsup slice comes from the end of the shuffle, so the corpus (its start) keeps
  // its documents, and its cache key, whatever the held-out size.
  const nHeld = take(sizes.pretrainHeldOut ?? 0, unsup.length, "data.pretrainHeldOut");
  const nPre = take(sizes.pretrainDocs, unsup.length - nHeld, "data.pretrainDocs (+ data.pretrainHeldOut)");
  const nTestNeeded = sizes.classifierTrain + sizes.classifierHeldOut + sizes.evalPrompts + (sizes.rmHeldOut ?? 0) + (sizes.lmHeldOut ?? 0);
  take(nTestNeeded, test.length, "data.classifierTrain + data.classifierHeldOut + data.evalPrompts (+ data.rmHeldOut + data.lmHeldOut)");
  const publicCorpus = unsup.slice(0, nPre);
  // unsup repeats some texts: a held-out document whose text is in the corpus would measure memory, not generalisation.
  const corpusTexts = nHeld ? new Set(publicCorpus.map((r) => textKey(r.text))) : new Set<string>();
  let o = 0;
  return {
    publicSeed,
    publicCorpus,
    classifierTrain: test.slice(o, (o += sizes.classifierTrain)),
    classifierHeldOut: test.slice(o, (o += sizes.classifierHeldOut)),
    evalPrompts: test.slice(o, (o += sizes.evalPrompts)),
    rmHeldOut: test.slice(o, (o += sizes.rmHeldOut ?? 0)),
    // From the end of the test shuffle: the same reviews whatever the sizes of the other test roles.
    lmHeldOut: test.slice(test.length - (sizes.lmHeldOut ?? 0)),
    pretrainHeldOut: unsup.slice(unsup.length - nHeld).filter((r) => !corpusTexts.has(textKey(r.text))),
  };
}

/** The text a duplicate check compares: cleaned, lower-cased, white space folded. */
export function normalisedText(text: string): string {
  return cleanReview(text).toLowerCase().replace(/\s+/g, " ");
}

const textKey = (text: string) => createHash("sha256").update(normalisedText(text)).digest("base64");

/**
 * The private set after de-duplication: records whose text appears in any public set (test or
 * unsup) are dropped; of private records sharing a text, the one with the smallest id is kept
 * (the copies are the same data, so which one stays changes nothing). Duplicate ids are refused.
 */
export function dedupPrivate(src: ImdbSources): { kept: ImdbRecord[]; removed: Roles["removed"] } {
  const seen = new Set<string>();
  for (const r of src.train) {
    if (seen.has(r.id)) throw new DataError(`imdb/train.jsonl.gz: id "${r.id}" appears more than once; every private record needs a unique id (the stage split is keyed by it)`);
    seen.add(r.id);
  }
  const publicTexts = new Set<string>();
  for (const r of src.test) publicTexts.add(textKey(r.text));
  for (const r of src.unsup) publicTexts.add(textKey(r.text));
  let inPublicSets = 0;
  const firstByText = new Map<string, ImdbRecord>();
  for (const r of src.train) {
    const k = textKey(r.text);
    if (publicTexts.has(k)) {
      inPublicSets++;
      continue;
    }
    const prev = firstByText.get(k);
    if (!prev || r.id < prev.id) firstByText.set(k, r);
  }
  const keep = new Set([...firstByText.values()]);
  const kept = src.train.filter((r) => keep.has(r));
  return { kept, removed: { inPublicSets, repeatedPrivate: src.train.length - inPublicSets - kept.length } };
}

/**
 * Splits the sources into roles. The private split is keyed by `key` (the run's secret roles key):
 * a record with keyed coin u enters D when u < privateSize/|train|, and D1 when also u < that *
 * sftFraction (DP, parallel composition), so each record's stage is an independent draw.
 */
export function assignRoles(src: ImdbSources, sizes: RoleSizes, key: KeyedRng, disjoint: boolean): Roles {
  const pub = assignPublicRoles(src, sizes);
  const nD = take(sizes.privateSize, src.train.length, "data.privateSize");
  if (!(sizes.sftFraction > 0 && sizes.sftFraction < 1)) {
    throw new InvalidArgumentError("data.sftFraction", `must be strictly between 0 and 1, got ${sizes.sftFraction}`);
  }
  const { kept, removed } = nD > 0 ? dedupPrivate(src) : { kept: [], removed: { inPublicSets: 0, repeatedPrivate: 0 } };
  const pD = src.train.length ? nD / src.train.length : 0;
  const p1 = pD * sizes.sftFraction;
  const p2 = p1 + pD * (sizes.rmFraction ?? 0);
  const privateD: ImdbRecord[] = [];
  const d1: ImdbRecord[] = [];
  const d2: ImdbRecord[] = [];
  const d3: ImdbRecord[] = [];
  for (const r of kept) {
    const u = key.unit(r.id);
    if (u >= pD) continue;
    privateD.push(r);
    (u < p1 ? d1 : u < p2 ? d2 : d3).push(r);
  }
  const three = (sizes.rmFraction ?? 0) > 0;
  return {
    ...pub, privateD, removed, disjoint,
    d1: disjoint ? d1 : privateD,
    d2: !three ? [] : disjoint ? d2 : privateD,
    d3: disjoint ? d3 : privateD,
  };
}

const idsHash = (xs: readonly ImdbRecord[]) => createHash("sha256").update(xs.map((x) => x.id).join("\n")).digest("hex").slice(0, 16);

/** The released record of the roles: public roles (sizes, id hashes, ids) and the planned private sizes only. */
export function describePublicRoles(r: PublicRoles): Record<string, unknown> {
  const entry = (xs: ImdbRecord[]) => ({ size: xs.length, idsSha256: idsHash(xs), ids: xs.map((x) => x.id) });
  return {
    publicSeed: r.publicSeed,
    publicCorpus: { size: r.publicCorpus.length, idsSha256: idsHash(r.publicCorpus) },
    classifierTrain: entry(r.classifierTrain),
    classifierHeldOut: entry(r.classifierHeldOut),
    evalPrompts: entry(r.evalPrompts),
    ...(r.rmHeldOut.length ? { rmHeldOut: entry(r.rmHeldOut) } : {}),
    ...(r.pretrainHeldOut.length ? { pretrainHeldOut: { size: r.pretrainHeldOut.length, idsSha256: idsHash(r.pretrainHeldOut) } } : {}),
    ...(r.lmHeldOut.length ? { lmHeldOut: entry(r.lmHeldOut) } : {}),
  };
}

/** The private record of the split (run-dir/private/roles.json): realised sizes, removals, membership. */
export function describePrivateRoles(r: Roles): Record<string, unknown> {
  const entry = (xs: ImdbRecord[]) => ({ size: xs.length, idsSha256: idsHash(xs), ids: xs.map((x) => x.id) });
  return { disjoint: r.disjoint, removed: r.removed, privateD: { size: r.privateD.length, idsSha256: idsHash(r.privateD) }, d1: entry(r.d1), ...(r.d2.length ? { d2: entry(r.d2) } : {}), d3: entry(r.d3) };
}

/** A digest of the private membership, so a resumed run can check that its split is the same. */
export function privateRolesDigest(r: Roles): string {
  return createHash("sha256").update([String(r.disjoint), ...[r.d1, r.d2, r.d3].map((xs) => xs.map((x) => x.id).join(","))].join("\n")).digest("hex");
}

/** Scenario reward-model: a public held-out slice of the pairs and the private rest. */
export interface PreferenceRoles {
  /** Fixed by the public seed; measures the reward model (releasable). */
  heldOut: PreferencePair[];
  /** The private pairs of D2, each in by its own keyed coin. */
  private: PreferencePair[];
  /** Private pairs that repeat a held-out pair (same prompt and responses) and were removed. */
  removedAsPublic: number;
}

/**
 * Splits preference pairs: `heldOut` of them, drawn by the public seed, are the public evaluation
 * set; of the rest, those that repeat a held-out pair are removed and each remaining pair enters
 * D2 when its keyed coin is below privateSize / (the pairs left after the held-out slice).
 */
export function assignPreferenceRoles(pairs: readonly PreferencePair[], o: { heldOut: number; privateSize: number | "all"; publicSeed: number }, key: KeyedRng): PreferenceRoles {
  const ids = new Set<string>();
  for (const p of pairs) {
    if (ids.has(p.id)) throw new DataError(`preference pair id "${p.id}" appears more than once`);
    ids.add(p.id);
  }
  const shuffled = new SeededRng(`preference-roles/${o.publicSeed}`).shuffle(pairs);
  const heldOut = shuffled.slice(0, o.heldOut);
  const pool = shuffled.slice(o.heldOut);
  const n = take(o.privateSize, pool.length, "data.privateSize");
  const sig = (p: PreferencePair) => createHash("sha256").update(JSON.stringify([normalisedText(p.prompt), normalisedText(p.chosen), normalisedText(p.rejected)])).digest("base64");
  const publicSigs = new Set(heldOut.map(sig));
  const rate = pool.length ? n / pool.length : 0;
  let removedAsPublic = 0;
  const priv: PreferencePair[] = [];
  // File order, not the public shuffle's, so the private order carries no information of its own.
  const inPool = new Set(pool.map((p) => p.id));
  for (const p of pairs) {
    if (!inPool.has(p.id)) continue;
    if (publicSigs.has(sig(p))) {
      removedAsPublic++;
      continue;
    }
    if (key.unit(p.id) < rate) priv.push(p);
  }
  return { heldOut, private: priv, removedAsPublic };
}

export function preferenceRolesDigest(r: PreferenceRoles): string {
  return createHash("sha256").update(`${r.heldOut.map((x) => x.id).join(",")}\n${r.private.map((x) => x.id).join(",")}`).digest("hex");
}
