import { describe, expect, it } from "vitest";
import {
  meanRouge,
  porterStem,
  ROUGE_DESCRIPTION,
  rougeScores,
  rougeTokens,
  type Prf,
} from "../../../ts/eval/rouge.js";
import { InvalidArgumentError } from "../../../ts/util/errors.js";

function expectPrf(got: Prf, precision: number, recall: number, fmeasure: number, digits = 12): void {
  expect(got.precision).toBeCloseTo(precision, digits);
  expect(got.recall).toBeCloseTo(recall, digits);
  expect(got.fmeasure).toBeCloseTo(fmeasure, digits);
}

const ZERO = { precision: 0, recall: 0, fmeasure: 0 };

// NLTK 3.10 `PorterStemmer().stem(word)` (default mode NLTK_EXTENSIONS, the one rouge-score uses),
// generated with NLTK itself. The first rows are words where the npm `stemmer` / `porter-stemmer`
// packages (Martin Porter's reference rules) give another stem: "uses" -> "us", "days" -> "dai",
// "aged" -> "ag", "dying" -> "dy", "news" -> "new", "enjoy" -> "enjoi", "geology" -> "geologi" ...
// The rest are the examples of Porter's paper and words of this project's domain.
const NLTK_STEMS: Record<string, string> = {
  uses: "use", used: "use", using: "use", useful: "use", usefulness: "use", days: "day",
  says: "say", ages: "age", aged: "age", aging: "age", dies: "die", died: "die", dying: "die",
  lies: "lie", lied: "lie", lying: "lie", ties: "tie", tied: "tie", tying: "tie", eyes: "eye",
  eyed: "eye", eyeing: "eye", keys: "key", played: "play", playing: "play", plays: "play",
  enjoy: "enjoy", enjoyment: "enjoy", happy: "happi", happiness: "happi", crying: "cri",
  cries: "cri", cried: "cri", flies: "fli", flying: "fli", spied: "spi", skies: "sky",
  news: "news", innings: "inning", inning: "inning", outings: "outing", canning: "canning",
  howe: "howe", proceed: "proceed", exceed: "exceed", succeed: "succeed", running: "run",
  runs: "run", runner: "runner", caresses: "caress", ponies: "poni", caress: "caress",
  cats: "cat", feed: "feed", agreed: "agre", plastered: "plaster", bled: "bled",
  motoring: "motor", sing: "sing", conflated: "conflat", troubled: "troubl", sized: "size",
  hopping: "hop", tanned: "tan", falling: "fall", hissing: "hiss", fizzed: "fizz",
  failing: "fail", filing: "file", relational: "relat", conditional: "condit", rational: "ration",
  valenci: "valenc", hesitanci: "hesit", digitizer: "digit", conformabli: "conform",
  radicalli: "radic", differentli: "differ", vileli: "vile", analogousli: "analog",
  vietnamization: "vietnam", predication: "predic", operator: "oper", feudalism: "feudal",
  decisiveness: "decis", hopefulness: "hope", callousness: "callous", formaliti: "formal",
  sensitiviti: "sensit", sensibiliti: "sensibl", triplicate: "triplic", formative: "form",
  formalize: "formal", electriciti: "electr", electrical: "electr", hopeful: "hope",
  goodness: "good", revival: "reviv", allowance: "allow", inference: "infer", airliner: "airlin",
  gyroscopic: "gyroscop", adjustable: "adjust", defensible: "defens", irritant: "irrit",
  replacement: "replac", adjustment: "adjust", dependent: "depend", adoption: "adopt",
  homologou: "homolog", communism: "commun", activate: "activ", angulariti: "angular",
  homologous: "homolog", effective: "effect", bowdlerize: "bowdler", probate: "probat",
  rate: "rate", cease: "ceas", controll: "control", roll: "roll", generalizations: "gener",
  generously: "gener", geology: "geolog", archaeology: "archaeolog", theology: "theolog",
  fully: "fulli", hopefully: "hope", additionally: "addit", buses: "buse", aced: "ace",
  abbey: "abbey", ahoy: "ahoy", "2000s": "2000", covid19: "covid19", yyyy: "yyyi",
  syzygy: "syzygi", summarization: "summar", summaries: "summari", summary: "summari",
  generated: "gener", generating: "gener", generation: "gener", models: "model",
  modeling: "model", preference: "prefer", preferences: "prefer", rewards: "reward",
  rewarded: "reward", privacy: "privaci", private: "privat", privately: "privat",
  differential: "differenti", differentially: "differenti", aligned: "align", alignment: "align",
  reinforcement: "reinforc", learning: "learn", learned: "learn", human: "human",
  feedback: "feedback",
};

describe("porterStem (NLTK PorterStemmer, NLTK_EXTENSIONS)", () => {
  it("gives NLTK's stems", () => {
    const got = Object.fromEntries(Object.keys(NLTK_STEMS).map((w) => [w, porterStem(w)]));
    expect(got).toEqual(NLTK_STEMS);
  });
  it("leaves words of 1 or 2 characters alone and handles runs of y", () => {
    expect(porterStem("as")).toBe("as");
    expect(porterStem("y".repeat(10_000))).toBe("y".repeat(9_999) + "i");
  });
});

describe("rougeTokens (rouge-score's default tokenizer)", () => {
  it("lowercases and keeps [a-z0-9]+ runs (rouge-score tokenize_test)", () => {
    expect(rougeTokens("one Two three", { stem: false })).toEqual(["one", "two", "three"]);
    expect(rougeTokens("one\n Two \nthree", { stem: false })).toEqual(["one", "two", "three"]);
  });
  it("splits on punctuation, apostrophes, hyphens and non-ASCII letters", () => {
    expect(rougeTokens("Don't e-mail the CAFÉ's naïve owner, ok?!", { stem: false })).toEqual([
      "don", "t", "e", "mail", "the", "caf", "s", "na", "ve", "owner", "ok",
    ]);
    expect(rougeTokens("  \t ... \n", { stem: false })).toEqual([]);
    expect(rougeTokens("COVID-19 in 2020s: 3.5%")).toEqual(["covid", "19", "in", "2020", "3", "5"]);
  });
  it("stems only tokens longer than 3 characters", () => {
    expect(rougeTokens("Running runs ran run")).toEqual(["run", "run", "ran", "run"]);
    expect(rougeTokens("use uses used using")).toEqual(["use", "use", "use", "use"]);
    expect(rougeTokens("bus buses")).toEqual(["bus", "buse"]);
    expect(rougeTokens("ties tie TIED")).toEqual(["tie", "tie", "tie"]);
  });
});

describe("rougeScores: hand-computed cases", () => {
  it("scores identical texts 1 and disjoint texts 0", () => {
    const same = rougeScores("The cat sat on the mat.", "the cat sat on the mat");
    for (const prf of [same.rouge1, same.rouge2, same.rougeL]) expectPrf(prf, 1, 1, 1);
    const disjoint = rougeScores("green eggs and ham", "the cat sat on the mat");
    expect(disjoint).toEqual({ rouge1: ZERO, rouge2: ZERO, rougeL: ZERO });
  });

  it("clips repeated n-grams to the reference's counts", () => {
    // candidate unigrams: the x4; reference: the, cat -> overlap min(4, 1) = 1.
    const s = rougeScores("the the the the", "the cat");
    expectPrf(s.rouge1, 1 / 4, 1 / 2, 1 / 3);
    expectPrf(s.rouge2, 0, 0, 0);
    // bigrams: (a b) x3, (b a) x2 against (a b) x2, (b x), (x a) -> overlap 2.
    const t = rougeScores("a b a b a b", "a b x a b");
    // unigrams: a x3, b x3 against a x2, b x2, x -> overlap 4.
    expectPrf(t.rouge1, 4 / 6, 4 / 5, (2 * (4 / 6) * (4 / 5)) / (4 / 6 + 4 / 5));
    expectPrf(t.rouge2, 2 / 5, 2 / 4, (2 * (2 / 5) * (2 / 4)) / (2 / 5 + 2 / 4));
  });

  it("takes ROUGE-L from the longest common subsequence, not contiguous runs", () => {
    // Lin (2004), section 3.1: S1 reference, S2 and S3 candidates. With stemming "killed" = "kill".
    const s1 = "police killed the gunman";
    const s2 = rougeScores("police kill the gunman", s1);
    expectPrf(s2.rougeL, 1, 1, 1);
    expectPrf(s2.rouge2, 1, 1, 1);
    const s3 = rougeScores("the gunman kill police", s1);
    expectPrf(s3.rouge1, 1, 1, 1);
    expectPrf(s3.rouge2, 1 / 3, 1 / 3, 1 / 3); // only "the gunman"
    expectPrf(s3.rougeL, 2 / 4, 2 / 4, 2 / 4);
    // Without stemming S2 matches 3 of 4 tokens in order.
    expectPrf(rougeScores("police kill the gunman", s1, { stem: false }).rougeL, 3 / 4, 3 / 4, 3 / 4);
    // rouge-score's testLcsTable: LCS of [1 2 3 4 5] and [2 5 3 4] is [2 3 4].
    const lcs = rougeScores("w2 w5 w3 w4", "w1 w2 w3 w4 w5");
    expectPrf(lcs.rougeL, 3 / 4, 3 / 5, (2 * (3 / 4) * (3 / 5)) / (3 / 4 + 3 / 5));
    // A shorter reference than candidate takes the other branch of the table.
    const longCandidate = rougeScores("x w1 y w2 z w3 q", "w1 w2 w3");
    expectPrf(longCandidate.rougeL, 3 / 7, 1, (2 * (3 / 7)) / (3 / 7 + 1));
  });

  it("scores 0 when either side has no token", () => {
    for (const [candidate, reference] of [
      ["", "testing one two"],
      ["testing one two", ""],
      ["", ""],
      ["/", "w1 w2 w3"],
      ["¿¡ — !?", "…"],
    ]) {
      expect(rougeScores(candidate, reference)).toEqual({ rouge1: ZERO, rouge2: ZERO, rougeL: ZERO });
    }
    // One token on each side: no bigram, but ROUGE-1 and ROUGE-L are defined.
    const one = rougeScores("Hello!", "hello");
    expectPrf(one.rouge1, 1, 1, 1);
    expect(one.rouge2).toEqual(ZERO);
    expectPrf(one.rougeL, 1, 1, 1);
  });

  it("ignores case and punctuation", () => {
    const s = rougeScores("HELLO, World!!! (Again.)", "hello world again");
    for (const prf of [s.rouge1, s.rouge2, s.rougeL]) expectPrf(prf, 1, 1, 1);
  });

  it("matches inflected forms through the stemmer", () => {
    expectPrf(rougeScores("running", "runs").rouge1, 1, 1, 1);
    expectPrf(rougeScores("run", "running").rouge1, 1, 1, 1);
    expect(rougeScores("ran", "runs").rouge1).toEqual(ZERO); // irregular past tense: no match
    expectPrf(rougeScores("The model used days", "the models use a day").rouge1, 1, 4 / 5, 8 / 9);
    expect(rougeScores("running", "runs", { stem: false }).rouge1).toEqual(ZERO);
  });

  it("puts precision over the candidate and recall over the reference", () => {
    const s = rougeScores("a b", "a b c d");
    expectPrf(s.rouge1, 1, 1 / 2, 2 / 3);
    expectPrf(s.rouge2, 1, 1 / 3, 1 / 2);
    expectPrf(s.rougeL, 1, 1 / 2, 2 / 3);
  });
});

describe("rougeScores: rouge-score's published tests (rouge_scorer_test.py)", () => {
  // scorer.score(target, prediction) there; rougeScores(candidate = prediction, reference = target).
  it("testRouge1, testRouge2, testRougeLConsecutive, testRougeLNonConsecutive", () => {
    expectPrf(rougeScores("testing", "testing one two").rouge1, 1, 1 / 3, 1 / 2);
    expectPrf(rougeScores("testing one", "testing one two").rouge2, 1, 1 / 2, 2 / 3);
    expectPrf(rougeScores("testing one", "testing one two").rougeL, 1, 2 / 3, 4 / 5);
    expectPrf(rougeScores("testing two", "testing one two").rougeL, 1, 2 / 3, 4 / 5);
    expectPrf(rougeScores("testing one", "testing one two").rouge1, 1, 2 / 3, 4 / 5);
  });

  it("testRougeEmpty", () => {
    expect(rougeScores("", "testing one two")).toEqual({ rouge1: ZERO, rouge2: ZERO, rougeL: ZERO });
  });

  // The first two lines of rouge/testdata/target.txt and prediction.txt, with the values that
  // rouge-score's tests take from ROUGE-1.5.5 (5 decimals).
  const TARGETS = [
    "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxer tKM L\n",
    "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion SN\n",
  ];
  const PREDICTIONS = [
    "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxi\n",
    "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD\n",
  ];

  it("Rouge1/Rouge2/RougeL AgainstRouge155 (no stemming)", () => {
    const [a, b] = [0, 1].map((i) => rougeScores(PREDICTIONS[i], TARGETS[i], { stem: false }));
    expectPrf(a.rouge1, 0.6875, 0.40741, 0.51163, 5);
    expectPrf(b.rouge1, 0.65385, 0.40476, 0.5, 5);
    expectPrf(a.rouge2, 0.53333, 0.30769, 0.39024, 5);
    expectPrf(b.rouge2, 0.48, 0.29268, 0.36364, 5);
    expectPrf(a.rougeL, 0.6875, 0.40741, 0.51163, 5);
    expectPrf(b.rougeL, 0.65385, 0.40476, 0.5, 5);
  });

  it("Rouge1/Rouge2 AgainstRouge155WithStemming", () => {
    const [a, b] = [0, 1].map((i) => rougeScores(PREDICTIONS[i], TARGETS[i]));
    expectPrf(a.rouge1, 0.6875, 0.40741, 0.51163, 5);
    expectPrf(b.rouge1, 0.69231, 0.42857, 0.52941, 5);
    expectPrf(a.rouge2, 0.53333, 0.30769, 0.39024, 5);
    expectPrf(b.rouge2, 0.48, 0.29268, 0.36364, 5);
    // Not in rouge-score's tests; computed with its scoring rules and NLTK's stemmer.
    expectPrf(b.rougeL, 0.69231, 0.42857, 0.52941, 5);
  });
});

// A plain reference for the scoring (string n-gram maps and the full LCS table), to check the
// optimized code on random texts with many repeats.
function naiveScores(candidate: string, reference: string): { rouge1: Prf; rouge2: Prf; rougeL: Prf } {
  const c = rougeTokens(candidate);
  const r = rougeTokens(reference);
  const f = (p: number, q: number) => (p + q > 0 ? (2 * p * q) / (p + q) : 0);
  const ngram = (n: number): Prf => {
    const grams = (t: string[]) => {
      const m = new Map<string, number>();
      for (let i = 0; i + n <= t.length; i++) {
        const k = t.slice(i, i + n).join(" ");
        m.set(k, (m.get(k) ?? 0) + 1);
      }
      return m;
    };
    const gc = grams(c);
    const gr = grams(r);
    let overlap = 0;
    for (const [k, v] of gr) overlap += Math.min(v, gc.get(k) ?? 0);
    const nc = [...gc.values()].reduce((a, b) => a + b, 0);
    const nr = [...gr.values()].reduce((a, b) => a + b, 0);
    const p = overlap / Math.max(nc, 1);
    const q = overlap / Math.max(nr, 1);
    return { precision: p, recall: q, fmeasure: f(p, q) };
  };
  let rougeL = ZERO;
  if (c.length > 0 && r.length > 0) {
    const t = Array.from({ length: r.length + 1 }, () => new Array<number>(c.length + 1).fill(0));
    for (let i = 1; i <= r.length; i++)
      for (let j = 1; j <= c.length; j++)
        t[i][j] = r[i - 1] === c[j - 1] ? t[i - 1][j - 1] + 1 : Math.max(t[i - 1][j], t[i][j - 1]);
    const l = t[r.length][c.length];
    rougeL = { precision: l / c.length, recall: l / r.length, fmeasure: f(l / c.length, l / r.length) };
  }
  return { rouge1: ngram(1), rouge2: ngram(2), rougeL };
}

describe("rougeScores against a plain implementation", () => {
  it("agrees exactly on 400 random pairs with repeated tokens", () => {
    const vocabulary = ["the", "a", "models", "model", "used", "uses", "day", "days", "run", "Running", "x", "of"];
    let seed = 12345;
    const rand = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const text = () =>
      Array.from({ length: Math.floor(rand() * 40) }, () => vocabulary[Math.floor(rand() * vocabulary.length)]).join(
        rand() < 0.5 ? " " : ", ",
      );
    for (let k = 0; k < 400; k++) {
      const candidate = text();
      const reference = text();
      expect(rougeScores(candidate, reference)).toEqual(naiveScores(candidate, reference));
    }
  });

  it("stays right after its token tables fill up and are dropped", () => {
    const huge = Array.from({ length: 600_000 }, (_, i) => "t" + i.toString(36)).join(" ");
    const p = 1 / 600_000;
    expectPrf(rougeScores(huge, "t0 zzz", { stem: false }).rouge1, p, 1 / 2, (2 * p * 0.5) / (p + 0.5));
    expectPrf(rougeScores("a b a b a b", "a b x a b").rouge2, 2 / 5, 2 / 4, (2 * 0.4 * 0.5) / 0.9);
    expect(rougeScores("the cat sat", "the dog sat")).toEqual(naiveScores("the cat sat", "the dog sat"));
  });
});

describe("meanRouge", () => {
  it("averages the F-measures x 100 over the pairs", () => {
    const m = meanRouge([
      { candidate: "the cat sat", reference: "the cat sat" },
      { candidate: "green eggs", reference: "the cat sat" },
      { candidate: "testing one", reference: "testing one two" },
    ]);
    expect(m.count).toBe(3);
    expect(m.rouge1).toBeCloseTo((100 * (1 + 0 + 4 / 5)) / 3, 10);
    expect(m.rouge2).toBeCloseTo((100 * (1 + 0 + 2 / 3)) / 3, 10);
    expect(m.rougeL).toBeCloseTo((100 * (1 + 0 + 4 / 5)) / 3, 10);
  });

  it("takes any iterable and refuses an empty one", () => {
    function* pairs() {
      yield { candidate: "a b", reference: "a b" };
    }
    expect(meanRouge(pairs())).toEqual({ rouge1: 100, rouge2: 100, rougeL: 100, count: 1 });
    expect(() => meanRouge([])).toThrow(InvalidArgumentError);
  });

  it("scores 10,000 pairs of ~50 tokens quickly", () => {
    const words = (
      "the model policy reward privacy summary reference generated aligned learning " +
      "of to a in and is was days used running"
    ).split(" ");
    let seed = 7;
    const rand = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
    const word = () => words[Math.floor(rand() * words.length)] + (rand() < 0.1 ? "," : "");
    const text = () => Array.from({ length: 50 }, word).join(" ");
    const pairs = Array.from({ length: 10_000 }, () => ({ candidate: text(), reference: text() }));
    const t0 = performance.now();
    const m = meanRouge(pairs);
    const ms = performance.now() - t0;
    expect(m.count).toBe(10_000);
    // About 0.2 s here on 2 busy cores; the bound leaves room for a loaded CI machine.
    expect(ms).toBeLessThan(2_000);
  });
});

describe("ROUGE_DESCRIPTION", () => {
  it("is one line that names the conventions", () => {
    expect(ROUGE_DESCRIPTION).not.toContain("\n");
    expect(ROUGE_DESCRIPTION.startsWith(
      "ROUGE-1/2/L F1 x 100, rouge-score conventions: lowercase, [a-z0-9]+ tokens, Porter stemming",
    )).toBe(true);
  });
});
