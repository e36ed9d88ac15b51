/**
 * ROUGE-1, ROUGE-2 and ROUGE-L of a candidate against one reference, following the conventions of
 * Google's `rouge-score` package as configured by
 * `rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)`:
 *
 * - tokens: the text is lowercased, every run of characters outside [a-z0-9] becomes a separator,
 *   and the tokens are the remaining [a-z0-9]+ runs (so "don't" is "don" and "t", and non-ASCII
 *   letters separate tokens);
 * - stemming: tokens longer than 3 characters go through the Porter stemmer as NLTK runs it by
 *   default (`PorterStemmer()`, mode NLTK_EXTENSIONS); tokens of 1 to 3 characters are kept as they
 *   are (so "use" stays "use", and "uses", "used", "using" stem to "use");
 * - ROUGE-N: clipped n-gram overlap, precision = overlap / candidate n-grams, recall = overlap /
 *   reference n-grams (each denominator at least 1, so an empty side scores 0);
 * - ROUGE-L: longest common subsequence of the whole token sequences (not the summary-level
 *   rougeLsum), 0 when either side has no token;
 * - F = 2PR / (P + R), and 0 when P + R = 0.
 *
 * The stemmer below is this module's own implementation of that NLTK mode (no npm stemmer matches
 * it: `stemmer` and `porter-stemmer` implement Martin Porter's reference version and differ from
 * NLTK on about 1% of English words, among them common ones such as "used", "days", "says",
 * "ages", "dies" and "eyes", which NLTK conflates with "use", "day", "say", "age", "die", "eye"
 * and they do not). It gives NLTK 3.10's stems for all of a 274,000-word English list and of
 * 300,000 random [a-z0-9] strings, and rougeScores agreed bit for bit with rouge-score's tokenizer
 * and scoring (transcribed, run with NLTK) on 3,000 random pairs, stemmed and not;
 * test/ts/eval/rouge.test.ts pins a sample of those words and rouge-score's own test cases.
 */
import { InvalidArgumentError } from "../util/errors.js";

/** Precision, recall and F-measure of one ROUGE variant, each a fraction in [0, 1]. */
export interface Prf {
  precision: number;
  recall: number;
  fmeasure: number;
}

export interface RougeScores {
  rouge1: Prf;
  rouge2: Prf;
  rougeL: Prf;
}

/** Corpus means of the F-measures, x 100 (the usual way ROUGE is reported), over `count` pairs. */
export interface MeanRouge {
  rouge1: number;
  rouge2: number;
  rougeL: number;
  count: number;
}

export interface RougePair {
  candidate: string;
  reference: string;
}

export interface RougeOptions {
  /** Porter-stem tokens longer than 3 characters (rouge-score's use_stemmer). Default true. */
  stem?: boolean;
}

export const ROUGE_DESCRIPTION =
  "ROUGE-1/2/L F1 x 100, rouge-score conventions: lowercase, [a-z0-9]+ tokens, Porter stemming " +
  "(NLTK's default PorterStemmer rules, built in) of tokens longer than 3 characters, " +
  "sentence-level LCS for ROUGE-L, mean over pairs";

// ---------------------------------------------------------------------------------------------
// Porter stemmer, NLTK_EXTENSIONS mode.
//
// Words are lowercase [a-z0-9] strings here. A letter is a vowel if it is a, e, i, o or u, or a
// "y" that follows a consonant; every other character (digits included) is a consonant.

const VOWEL = new Uint8Array(128);
for (const c of "aeiou") VOWEL[c.charCodeAt(0)] = 1;
const Y = "y".charCodeAt(0);

function isConsonant(word: string, i: number): boolean {
  const c = word.charCodeAt(i);
  if (VOWEL[c] === 1) return false;
  if (c !== Y) return true;
  // A run of y's: the first one is a consonant unless a consonant precedes it, and each further y
  // flips the answer.
  let start = i;
  while (start > 0 && word.charCodeAt(start - 1) === Y) start -= 1;
  const firstIsConsonant = start === 0 || VOWEL[word.charCodeAt(start - 1)] === 1;
  return (i - start) % 2 === 0 ? firstIsConsonant : !firstIsConsonant;
}

/** Porter's m: the number of vowel-to-consonant transitions, i.e. k in [C](VC)^k[V]. */
function measure(stem: string): number {
  let m = 0;
  let previousWasVowel = false;
  for (let i = 0; i < stem.length; i++) {
    const consonant = isConsonant(stem, i);
    if (consonant && previousWasVowel) m += 1;
    previousWasVowel = !consonant;
  }
  return m;
}

function containsVowel(stem: string): boolean {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true;
  return false;
}

function endsDoubleConsonant(word: string): boolean {
  const n = word.length;
  return n >= 2 && word[n - 1] === word[n - 2] && isConsonant(word, n - 1);
}

/** Porter's *o (consonant-vowel-consonant, the last not w, x or y), plus NLTK's two-letter "vc". */
function endsCvc(word: string): boolean {
  const n = word.length;
  if (n === 2) return !isConsonant(word, 0) && isConsonant(word, 1);
  if (n < 3) return false;
  const last = word[n - 1];
  return (
    isConsonant(word, n - 3) &&
    !isConsonant(word, n - 2) &&
    isConsonant(word, n - 1) &&
    last !== "w" &&
    last !== "x" &&
    last !== "y"
  );
}

type Condition = (stem: string) => boolean;
/** [suffix, replacement, condition on the word without the suffix]. */
type Rule = readonly [string, string, Condition | null];

/**
 * Porter's rule lists: the first rule whose suffix the word ends with decides. If its condition
 * holds the suffix is replaced, otherwise the word is left as it is (later rules are not tried).
 */
function applyFirstMatching(word: string, rules: readonly Rule[]): string {
  for (const [suffix, replacement, condition] of rules) {
    if (!word.endsWith(suffix)) continue;
    const stem = word.slice(0, word.length - suffix.length);
    return condition === null || condition(stem) ? stem + replacement : word;
  }
  return word;
}

const mPositive: Condition = (stem) => measure(stem) > 0;
const mAboveOne: Condition = (stem) => measure(stem) > 1;

/** Words NLTK maps by table before any rule runs. */
const IRREGULAR = new Map<string, string>([
  ["sky", "sky"],
  ["skies", "sky"],
  ["dying", "die"],
  ["lying", "lie"],
  ["tying", "tie"],
  ["news", "news"],
  ["innings", "inning"],
  ["inning", "inning"],
  ["outings", "outing"],
  ["outing", "outing"],
  ["cannings", "canning"],
  ["canning", "canning"],
  ["howe", "howe"],
  ["proceed", "proceed"],
  ["exceed", "exceed"],
  ["succeed", "succeed"],
]);

const STEP1A: readonly Rule[] = [
  ["sses", "ss", null],
  ["ies", "i", null],
  ["ss", "ss", null],
  ["s", "", null],
];

function step1a(word: string): string {
  // NLTK: a four-letter "-ies" word keeps "ie" ("dies" -> "die", but "flies" -> "fli").
  if (word.length === 4 && word.endsWith("ies")) return word.slice(0, 1) + "ie";
  return applyFirstMatching(word, STEP1A);
}

function step1b(word: string): string {
  // NLTK: "-ied" becomes "ie" in a four-letter word and "i" otherwise ("died" -> "die").
  if (word.endsWith("ied")) return word.slice(0, word.length - 3) + (word.length === 4 ? "ie" : "i");
  if (word.endsWith("eed")) {
    const stem = word.slice(0, word.length - 3);
    return measure(stem) > 0 ? stem + "ee" : word;
  }
  let stem: string;
  if (word.endsWith("ed") && containsVowel(word.slice(0, word.length - 2))) {
    stem = word.slice(0, word.length - 2);
  } else if (word.endsWith("ing") && containsVowel(word.slice(0, word.length - 3))) {
    stem = word.slice(0, word.length - 3);
  } else {
    return word;
  }
  // Tidy the stem that "-ed" or "-ing" left: restore an "e", undouble a final consonant, or add
  // "e" to a short cvc stem. As in the rule lists, the first matching case decides.
  if (stem.endsWith("at") || stem.endsWith("bl") || stem.endsWith("iz")) return stem + "e";
  if (endsDoubleConsonant(stem)) {
    const last = stem[stem.length - 1];
    return last === "l" || last === "s" || last === "z" ? stem : stem.slice(0, stem.length - 1);
  }
  return measure(stem) === 1 && endsCvc(stem) ? stem + "e" : stem;
}

function step1c(word: string): string {
  // NLTK: y -> i only after a consonant that is not the whole stem ("happy" -> "happi", but
  // "enjoy" and "by" keep their y).
  if (!word.endsWith("y")) return word;
  const stem = word.slice(0, word.length - 1);
  return stem.length > 1 && isConsonant(stem, stem.length - 1) ? stem + "i" : word;
}

const STEP2_RULES: readonly Rule[] = [
  ["ational", "ate", mPositive],
  ["tional", "tion", mPositive],
  ["enci", "ence", mPositive],
  ["anci", "ance", mPositive],
  ["izer", "ize", mPositive],
  ["bli", "ble", mPositive],
  ["alli", "al", mPositive],
  ["entli", "ent", mPositive],
  ["eli", "e", mPositive],
  ["ousli", "ous", mPositive],
  ["ization", "ize", mPositive],
  ["ation", "ate", mPositive],
  ["ator", "ate", mPositive],
  ["alism", "al", mPositive],
  ["iveness", "ive", mPositive],
  ["fulness", "ful", mPositive],
  ["ousness", "ous", mPositive],
  ["aliti", "al", mPositive],
  ["iviti", "ive", mPositive],
  ["biliti", "ble", mPositive],
  ["fulli", "ful", mPositive],
  // NLTK: the measure of "-logi" is taken with the "l" kept on the stem ("geologi" -> "geolog").
  ["logi", "log", (stem) => measure(stem + "l") > 0],
];

function step2(word: string): string {
  // NLTK: "-alli" -> "-al" is tried first, and the result goes through step 2 again.
  if (word.endsWith("alli")) {
    const stem = word.slice(0, word.length - 4);
    if (measure(stem) > 0) return step2(stem + "al");
  }
  return applyFirstMatching(word, STEP2_RULES);
}

const STEP3_RULES: readonly Rule[] = [
  ["icate", "ic", mPositive],
  ["ative", "", mPositive],
  ["alize", "al", mPositive],
  ["iciti", "ic", mPositive],
  ["ical", "ic", mPositive],
  ["ful", "", mPositive],
  ["ness", "", mPositive],
];

const STEP4_RULES: readonly Rule[] = [
  ["al", "", mAboveOne],
  ["ance", "", mAboveOne],
  ["ence", "", mAboveOne],
  ["er", "", mAboveOne],
  ["ic", "", mAboveOne],
  ["able", "", mAboveOne],
  ["ible", "", mAboveOne],
  ["ant", "", mAboveOne],
  ["ement", "", mAboveOne],
  ["ment", "", mAboveOne],
  ["ent", "", mAboveOne],
  ["ion", "", (stem) => measure(stem) > 1 && (stem.endsWith("s") || stem.endsWith("t"))],
  ["ou", "", mAboveOne],
  ["ism", "", mAboveOne],
  ["ate", "", mAboveOne],
  ["iti", "", mAboveOne],
  ["ous", "", mAboveOne],
  ["ive", "", mAboveOne],
  ["ize", "", mAboveOne],
];

function step5(word: string): string {
  // 5a: drop a final "e" if m > 1, or if m = 1 and the stem does not end cvc.
  if (word.endsWith("e")) {
    const stem = word.slice(0, word.length - 1);
    const m = measure(stem);
    if (m > 1 || (m === 1 && !endsCvc(stem))) word = stem;
  }
  // 5b: "-ll" -> "-l" when m > 1 (measured on the word less one "l").
  if (word.endsWith("ll") && measure(word.slice(0, word.length - 1)) > 1) {
    word = word.slice(0, word.length - 1);
  }
  return word;
}

/**
 * The Porter stem of a lowercase [a-z0-9] word, as NLTK's `PorterStemmer().stem` gives it
 * (NLTK_EXTENSIONS mode). Words of 1 or 2 characters are returned as they are.
 */
export function porterStem(word: string): string {
  const irregular = IRREGULAR.get(word);
  if (irregular !== undefined) return irregular;
  if (word.length <= 2) return word;
  let w = step1a(word);
  w = step1b(w);
  w = step1c(w);
  w = step2(w);
  w = applyFirstMatching(w, STEP3_RULES);
  w = applyFirstMatching(w, STEP4_RULES);
  return step5(w);
}

// ---------------------------------------------------------------------------------------------
// Tokens and scores.

const NON_ALPHANUMERIC = /[^a-z0-9]+/;

/** rouge-score's default tokenizer: lowercase, [a-z0-9]+ runs, stems of tokens over 3 characters. */
export function rougeTokens(text: string, options: RougeOptions = {}): string[] {
  const stem = options.stem ?? true;
  const tokens: string[] = [];
  for (const piece of text.toLowerCase().split(NON_ALPHANUMERIC)) {
    if (piece.length === 0) continue;
    tokens.push(stem && piece.length > 3 ? porterStem(piece) : piece);
  }
  return tokens;
}

// Scoring works on integer token ids. A text's vocabulary repeats a lot, so each raw token is
// mapped once to the id of its (stemmed or unstemmed) form, and the tables are dropped when they
// get large so that a long run over open-ended text does not grow them without bound.
const TABLE_LIMIT = 1 << 20;
const idOfForm = new Map<string, number>();
const stemmedIdOfToken = new Map<string, number>();
const unstemmedIdOfToken = new Map<string, number>();

function formId(form: string): number {
  let id = idOfForm.get(form);
  if (id === undefined) {
    id = idOfForm.size;
    idOfForm.set(form, id);
  }
  return id;
}

function dropTablesIfLarge(): void {
  if (idOfForm.size + stemmedIdOfToken.size + unstemmedIdOfToken.size < TABLE_LIMIT) return;
  idOfForm.clear();
  stemmedIdOfToken.clear();
  unstemmedIdOfToken.clear();
}

function tokenIds(text: string, stem: boolean): Int32Array {
  const pieces = text.toLowerCase().split(NON_ALPHANUMERIC);
  const ids = new Int32Array(pieces.length);
  const table = stem ? stemmedIdOfToken : unstemmedIdOfToken;
  let n = 0;
  for (const piece of pieces) {
    if (piece.length === 0) continue;
    let id = table.get(piece);
    if (id === undefined) {
      id = formId(stem && piece.length > 3 ? porterStem(piece) : piece);
      table.set(piece, id);
    }
    ids[n++] = id;
  }
  return ids.subarray(0, n);
}

// Scratch space reused across calls: per-id counts and local ids (all zero between calls), the
// bigram counts of one pair, and one LCS row.
let counts = new Int32Array(1024);
let localIds = new Int32Array(1024);
const bigramCounts = new Map<number, number>();
let lcsRow = new Int32Array(256);

function prf(overlap: number, candidateCount: number, referenceCount: number): Prf {
  const precision = overlap / Math.max(candidateCount, 1);
  const recall = overlap / Math.max(referenceCount, 1);
  const fmeasure = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, fmeasure };
}

/** Clipped unigram overlap: the sum over tokens of min(count in candidate, count in reference). */
function unigramOverlap(candidate: Int32Array, reference: Int32Array): number {
  if (counts.length < idOfForm.size) counts = new Int32Array(Math.max(idOfForm.size, 2 * counts.length));
  for (const id of reference) counts[id] += 1;
  let overlap = 0;
  for (const id of candidate) {
    if (counts[id] > 0) {
      overlap += 1;
      counts[id] -= 1;
    }
  }
  for (const id of reference) counts[id] = 0;
  return overlap;
}

/**
 * Clipped bigram overlap. Bigrams are keyed by ids local to the pair (1, 2, ... in order of first
 * appearance), so that a key (first * width + second) stays a small integer for any usual text.
 */
function bigramOverlap(candidate: Int32Array, reference: Int32Array): number {
  if (candidate.length < 2 || reference.length < 2) return 0;
  if (localIds.length < idOfForm.size) localIds = new Int32Array(Math.max(idOfForm.size, 2 * localIds.length));
  let width = 1;
  for (const id of reference) if (localIds[id] === 0) localIds[id] = width++;
  for (const id of candidate) if (localIds[id] === 0) localIds[id] = width++;
  for (let i = 1; i < reference.length; i++) {
    const key = localIds[reference[i - 1]] * width + localIds[reference[i]];
    bigramCounts.set(key, (bigramCounts.get(key) ?? 0) + 1);
  }
  let overlap = 0;
  for (let i = 1; i < candidate.length; i++) {
    const key = localIds[candidate[i - 1]] * width + localIds[candidate[i]];
    const left = bigramCounts.get(key);
    if (left !== undefined && left > 0) {
      overlap += 1;
      bigramCounts.set(key, left - 1);
    }
  }
  bigramCounts.clear();
  for (const id of reference) localIds[id] = 0;
  for (const id of candidate) localIds[id] = 0;
  return overlap;
}

/** Length of the longest common subsequence, with one row of the O(nm) table kept at a time. */
function lcsLength(a: Int32Array, b: Int32Array): number {
  if (a.length < b.length) [a, b] = [b, a];
  if (lcsRow.length < b.length + 1) lcsRow = new Int32Array(2 * (b.length + 1));
  const row = lcsRow;
  row.fill(0, 0, b.length + 1);
  for (let i = 0; i < a.length; i++) {
    const ai = a[i];
    let diagonal = 0; // row[j - 1] of the previous row
    for (let j = 1; j <= b.length; j++) {
      const above = row[j];
      const left = row[j - 1];
      row[j] = ai === b[j - 1] ? diagonal + 1 : above > left ? above : left;
      diagonal = above;
    }
  }
  return row[b.length];
}

/**
 * ROUGE-1, ROUGE-2 and ROUGE-L of `candidate` (the generated text; rouge-score's "prediction")
 * against `reference` (rouge-score's "target"): precision is over the candidate's n-grams, recall
 * over the reference's.
 */
export function rougeScores(candidate: string, reference: string, options: RougeOptions = {}): RougeScores {
  const stem = options.stem ?? true;
  dropTablesIfLarge();
  const c = tokenIds(candidate, stem);
  const r = tokenIds(reference, stem);
  const cBigrams = Math.max(c.length - 1, 0);
  const rBigrams = Math.max(r.length - 1, 0);
  return {
    rouge1: prf(unigramOverlap(c, r), c.length, r.length),
    rouge2: prf(bigramOverlap(c, r), cBigrams, rBigrams),
    rougeL:
      c.length === 0 || r.length === 0
        ? { precision: 0, recall: 0, fmeasure: 0 }
        : prf(lcsLength(c, r), c.length, r.length),
  };
}

/** Mean ROUGE-1/2/L F-measure x 100 over the pairs (each pair weighs the same). */
export function meanRouge(pairs: Iterable<RougePair>, options: RougeOptions = {}): MeanRouge {
  let rouge1 = 0;
  let rouge2 = 0;
  let rougeL = 0;
  let count = 0;
  for (const { candidate, reference } of pairs) {
    const scores = rougeScores(candidate, reference, options);
    rouge1 += scores.rouge1.fmeasure;
    rouge2 += scores.rouge2.fmeasure;
    rougeL += scores.rougeL.fmeasure;
    count += 1;
  }
  if (count === 0) throw new InvalidArgumentError("pairs", "ROUGE needs at least one (candidate, reference) pair");
  return { rouge1: (100 * rouge1) / count, rouge2: (100 * rouge2) / count, rougeL: (100 * rougeL) / count, count };
}
