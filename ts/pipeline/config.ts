/**
 * The run configuration (YAML or JSON): one zod schema, every field documented. Errors name the
 * field (`ppo.miniBatchSize: ...`) and the file. Derived sizes live in plan.ts, not here.
 */
import { readFileSync, existsSync, statSync } from "node:fs";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { z } from "zod";
import { ConfigError } from "../util/errors.js";
import { LIMITS } from "../privacy/types.js";
import { PPO_PARAM_DEFAULTS } from "../protocol/losses.js";

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const posNum = z.number().positive();
const unit = z.number().min(0).max(1);

/** epsilon: a number in (0, 100] (the range ts/privacy accepts), or "inf" / Infinity for a non-private run. */
const Epsilon = z
  .union([z.number(), z.enum(["inf", "infinity", "Infinity", ".inf"]).transform(() => Infinity)], {
    errorMap: () => ({ message: 'expected a positive number or "inf" (a non-private run)' }),
  })
  .refine((e) => e === Infinity || (e > 0 && e <= LIMITS.epsilonMax), (e) => ({
    message: `must be in (0, ${LIMITS.epsilonMax}] or "inf" (a non-private run), got ${e}`,
  }));

const TokenRange = z.tuple([posInt, posInt]).refine(([a, b]) => a <= b, { message: "expected [min, max] with min <= max" });

export const DataSchema = z.object({
  /**
   * imdb: the shipped IMDb data (every scenario runs here). tldr: the paper's scenario 2 data
   * (Reddit TL;DR posts and OpenAI's human comparisons, `dpalign data fetch tldr`); such configs
   * plan with --dry-run from the planned sizes, and running them needs the TL;DR pipeline, which
   * this version does not have yet.
   */
  source: z.enum(["imdb", "tldr"]).default("imdb"),
  /** Public unsup documents used for pre-training and the tokenizer; "all" for 50,000. */
  pretrainDocs: z.union([posInt, z.literal("all")]).default(20000),
  /** Public unsup documents held out from pre-training (and the tokenizer) to measure the base model's perplexity; 0: none. */
  pretrainHeldOut: nonNegInt.default(0),
  /** Public test reviews (the end of the public test shuffle, disjoint from the other test roles) for the held-out LM loss before and after SFT; 0: none. */
  lmHeldOut: nonNegInt.default(0),
  /** Public labeled reviews (from test) that train the reward classifier. */
  classifierTrain: posInt.default(2000),
  /** Further public labeled reviews (from test) for the classifier's accuracy. */
  classifierHeldOut: posInt.default(500),
  /** Held-out evaluation prompts (from test, disjoint from the classifier's sets). */
  evalPrompts: posInt.default(256),
  /** |D|: private train reviews used; "all" for 25,000 (the paper). */
  privateSize: z.union([posInt, z.literal("all")]).default("all"),
  /** Fraction of D given to D1 (DP-SFT) in DP mode; the rest is D3 (DP-PPO prompts). */
  sftFraction: z.number().gt(0).lt(1).default(0.5),
  /** scenario rlhf: probability that a record of D goes to D2 (the reward model's pairs); D3 gets the rest. */
  rmFraction: z.number().gt(0).lt(1).default(0.3),
  /** scenario rlhf: public held-out prefixes (from test) whose gold-labelled pairs measure the reward model's accuracy. */
  rmHeldOut: posInt.default(300),
  /** scenario reward-model: the preference pairs (a path under the data directory, or absolute). */
  preferences: z.object({
    format: z.enum(["hh-rlhf", "openai-sff", "jsonl"]).default("hh-rlhf"),
    file: z.string().default("hh-rlhf/harmless-base-test.jsonl.gz"),
    /** Pairs set aside (by data.publicSeed) as the public held-out set that measures the reward model; the rest is private. */
    heldOut: posInt.default(300),
  }).strict().default({}),
  /** Seed of the public roles (pre-training corpus, classifier sets, evaluation prompts), shared by every
   * run seed so that a sweep's seeds share one pretrained model, one reward and one evaluation set. */
  publicSeed: nonNegInt.default(0),
}).strict();

export const ModelSchema = z.object({
  /** "tiny": the built-in GPT-2-architecture model pretrained by `dpalign pretrain`; "hf": a local HF directory. */
  kind: z.enum(["tiny", "hf"]).default("tiny"),
  tiny: z.object({
    nLayer: posInt.default(2),
    nHead: posInt.default(2),
    nEmbd: posInt.default(64),
    nPositions: posInt.default(64),
    vocabSize: z.number().int().min(260).default(2048),
  }).strict().default({}),
  /** A local Hugging Face causal-LM directory (kind: hf), e.g. a GPT-2 checkout. */
  hfPath: z.string().optional(),
  lora: z.object({
    rank: nonNegInt.default(4),
    alpha: posNum.default(8),
    dropout: unit.default(0),
    targetModules: z.array(z.string()).nonempty().default(["c_attn"]),
  }).strict().default({}),
}).strict().superRefine((m, ctx) => {
  if (m.kind === "hf" && !m.hfPath) ctx.addIssue({ code: "custom", path: ["hfPath"], message: "required when model.kind is \"hf\"" });
  if (m.tiny.nEmbd % m.tiny.nHead !== 0) ctx.addIssue({ code: "custom", path: ["tiny", "nEmbd"], message: `must be divisible by tiny.nHead (${m.tiny.nHead})` });
});

export const PretrainSchema = z.object({
  /** Optimizer steps of non-private pre-training on the public corpus (tiny model only). */
  steps: posInt.default(800),
  batchSize: posInt.default(32),
  lr: posNum.default(2e-3),
  weightDecay: z.number().min(0).default(0.01),
  /** Tokens per training sequence. */
  seqLen: posInt.default(48),
  /**
   * Consecutive seqLen-token windows taken from each document (1: its first seqLen tokens only).
   * More windows give more distinct text from the same documents; a later window shorter than half
   * of seqLen is dropped (mostly padding).
   */
  windowsPerDoc: posInt.default(1),
  /** Documents used to train the tokenizer. */
  tokenizerDocs: posInt.default(5000),
}).strict();

/** The n-gram classifier (reward.kind "ngram"): a linear model on hashed n-grams of the policy's token ids. */
export const NgramRewardSchema = z.object({
  /** Rows of the hashed weight table (n-grams that collide share a weight). */
  buckets: z.number().int().min(2).max(2 ** 26).default(2 ** 20),
  /** Unigrams up to maxN-grams. */
  maxN: z.number().int().min(1).max(5).default(2),
  /** Passes over the labeled reviews. */
  epochs: posNum.default(3),
  batchSize: posInt.default(256),
  lr: posNum.default(0.5),
  weightDecay: z.number().min(0).default(0),
  /** Tokens kept of each review (its first); 0: every token. */
  maxTokens: nonNegInt.default(0),
  /**
   * Fraction of the training examples that are, at each step, a random window of 1 to
   * reward.shortWindow tokens of their review instead of the whole review. PPO scores short texts;
   * without such windows the weights of common n-grams, which barely matter in a 400-token mean,
   * drift freely and a lone "the" can score like praise.
   */
  windowFraction: unit.default(0.5),
}).strict();

export const RewardSchema = z.object({
  /**
   * The public reward of PPO and of the evaluation (reward = a score of prompt + completion):
   * ngram: a linear classifier on hashed n-grams, trained non-privately on the public labeled
   * reviews (reward = its positive-class logit: mean n-gram weight + bias). transformer: the
   * pretrained body with a scalar head, trained on a window of each labeled review. hf: a Hugging
   * Face sequence classifier (`path`, `labelIndex`; reward = that class's logit), not trained here.
   * python: a user's `function(prompts, completions) -> scores`, called inside the worker.
   */
  kind: z.enum(["ngram", "transformer", "hf", "python", "classifier"]).default("ngram"),
  ngram: NgramRewardSchema.default({}),
  // kind "transformer":
  steps: posInt.default(300),
  batchSize: posInt.default(32),
  lr: posNum.default(1e-3),
  maxTokens: posInt.default(48),
  /** Which tokens of a labeled review train the classifier: its first or its last maxTokens (the verdict is usually at the end). */
  window: z.enum(["head", "tail"]).default("tail"),
  /** kind "hf": a local sequence-classification directory, or a Hugging Face id read from the local cache (HF_HOME; never downloaded). */
  path: z.string().min(1).optional(),
  /** kind "hf": the index of the positive class (e.g. 2 for cardiffnlp/twitter-roberta-base-sentiment: negative, neutral, positive). */
  labelIndex: nonNegInt.default(1),
  /** kind "hf": the classifier's tokenizer when it is not in `path` (a directory or a cached id). */
  tokenizer: z.string().min(1).optional(),
  /** kind "python": "package.module:function", called as function(prompts: list[str], completions: list[str]) -> list[float]. */
  function: z.string().regex(/^[A-Za-z_][\w.]*:[A-Za-z_]\w*$/, "expected package.module:function").optional(),
  /** kind "python": directories put in front of the worker's sys.path before importing `function` (relative to the working directory). */
  pythonPath: z.array(z.string().min(1)).default([]),
  /** The held-out accuracy is also measured on the last this-many tokens of each review (PPO scores short texts). */
  shortWindow: posInt.default(24),
}).strict().superRefine((r, ctx) => {
  if (r.kind === "classifier") ctx.addIssue({ code: "custom", path: ["kind"], message: '"classifier" was renamed: use "transformer" for the pretrained body with a scalar head, or "ngram" (the default, more accurate)' });
  if (r.kind === "hf" && !r.path) ctx.addIssue({ code: "custom", path: ["path"], message: 'required when reward.kind is "hf": a local sequence-classification directory or a cached Hugging Face id' });
  if (r.kind === "python" && !r.function) ctx.addIssue({ code: "custom", path: ["function"], message: 'required when reward.kind is "python": "package.module:function"' });
});

export const PrivacySchema = z.object({
  /** Target epsilon of the pipeline; "inf" for non-private. */
  epsilon: Epsilon.default(4),
  /**
   * parallel: D1 and D3 are disjoint slices of D (the paper's setting; each stage gets the whole
   * target). sequential: a user may appear in both stages (D1 = D3 = D); the stages' mechanisms
   * are composed numerically and the budget is split between them.
   */
  composition: z.enum(["parallel", "sequential"]).default("parallel"),
  /**
   * Target delta. null (default): min(1/|D|^1.1, 1e-6), safely below 1/|D|. "1/n": 1/|D| as in
   * the paper (reproduces its setting; a mechanism may then leak one record with probability ~delta).
   */
  delta: z.union([z.number().gt(0).lt(1), z.literal("1/n")]).nullable().default(null),
  accountant: z.enum(["prv", "rdp"]).default("prv"),
  /**
   * Debugging only: derive the sampling key, the stage split and the noise from the run seed, so
   * a run can be repeated exactly. Such a run is NOT differentially private (anyone with the seed
   * recomputes its batches and noise); its reports say so and give epsilon as infinite.
   */
  reproducible: z.boolean().default(false),
  /** Replaced by `reproducible`; kept only to explain the change to old configs. */
  secureNoise: z.boolean().optional(),
  noiseSeed: z.number().optional(),
}).strict().superRefine((p, ctx) => {
  for (const k of ["secureNoise", "noiseSeed"] as const) {
    if (p[k] !== undefined) {
      ctx.addIssue({ code: "custom", path: [k], message: "was replaced by privacy.reproducible (true: seeded sampling and noise, reported as NOT private); remove it" });
    }
  }
});

const SftFields = {
  /** Expected (Poisson) logical batch size in DP mode; the fixed batch size otherwise. */
  batchSize: posInt,
  epochs: posNum,
  lr: posNum,
  schedule: z.enum(["constant", "cosine"]),
  maxGradNorm: posNum,
  weightDecay: z.number().min(0),
  /** Tokens per SFT review. */
  maxTokens: posInt,
  microBatchSize: nonNegInt,
};
export const SftSchema = z.object({
  batchSize: SftFields.batchSize.default(64),
  epochs: SftFields.epochs.default(4),
  lr: SftFields.lr.default(3e-3),
  schedule: SftFields.schedule.default("constant"),
  maxGradNorm: SftFields.maxGradNorm.default(1),
  weightDecay: SftFields.weightDecay.default(0.01),
  maxTokens: SftFields.maxTokens.default(32),
  microBatchSize: SftFields.microBatchSize.default(0),
}).strict();

const PpoFields = {
  /** Rollout batch: prompts generated together (DP: mini-batches of rollouts per generation round). */
  batchSize: posInt,
  /** DP: expected Poisson-sampled mini-batch per noisy step; non-private: fixed mini-batch. */
  miniBatchSize: posInt,
  /** Passes over D3. */
  epochs: posNum,
  /** T_PPO: noisy steps per sampled mini-batch (accounted as sigma/sqrt(K)). */
  ppoEpochs: posInt,
  lr: posNum,
  maxGradNorm: posNum,
  klControl: z.enum(["fixed", "adaptive"]),
  klCoef: z.number().min(0),
  klTarget: posNum,
  klHorizon: posNum,
  whitenAdvantages: z.enum(["none", "batch", "per_example"]),
  rewardNormalization: z.enum(["none", "batch", "fixed"]),
  rewardMean: z.number(),
  rewardStd: posNum,
  gamma: unit,
  lam: unit,
  clipRange: posNum,
  clipRangeValue: posNum,
  vfCoef: z.number().min(0),
  promptTokens: TokenRange,
  responseTokens: TokenRange,
  temperature: z.number().min(0),
  topK: nonNegInt,
  microBatchSize: nonNegInt,
};
export const PpoSchema = z.object({
  /**
   * scenario rlhf: what PPO optimises. "dp": the DP reward model learned on D2 (the method). The
   * evaluation reward model and the gold labeller are test-time only and refused here: an
   * evaluation must not judge with the model the policy was trained against.
   */
  reward: z.enum(["dp", "evaluation", "gold"]).default("dp"),
  batchSize: PpoFields.batchSize.default(256),
  miniBatchSize: PpoFields.miniBatchSize.default(64),
  epochs: PpoFields.epochs.default(4),
  ppoEpochs: PpoFields.ppoEpochs.default(1),
  lr: PpoFields.lr.default(3e-3),
  maxGradNorm: PpoFields.maxGradNorm.default(1),
  klControl: PpoFields.klControl.default("fixed"),
  klCoef: PpoFields.klCoef.default(0.05),
  klTarget: PpoFields.klTarget.default(6),
  klHorizon: PpoFields.klHorizon.default(10000),
  whitenAdvantages: PpoFields.whitenAdvantages.default("none"),
  rewardNormalization: PpoFields.rewardNormalization.default("none"),
  rewardMean: PpoFields.rewardMean.default(0),
  rewardStd: PpoFields.rewardStd.default(1),
  gamma: PpoFields.gamma.default(1),
  lam: PpoFields.lam.default(0.95),
  clipRange: PpoFields.clipRange.default(PPO_PARAM_DEFAULTS.clipRange),
  clipRangeValue: PpoFields.clipRangeValue.default(PPO_PARAM_DEFAULTS.clipRangeValue),
  vfCoef: PpoFields.vfCoef.default(PPO_PARAM_DEFAULTS.vfCoef),
  promptTokens: PpoFields.promptTokens.default([2, 8]),
  responseTokens: PpoFields.responseTokens.default([4, 16]),
  temperature: PpoFields.temperature.default(1),
  topK: PpoFields.topK.default(0),
  microBatchSize: PpoFields.microBatchSize.default(0),
}).strict();

export const EvalSchema = z.object({
  maxNewTokens: posInt.default(16),
  temperature: z.number().min(0).default(1),
  /** Prompt length range (tokens) for evaluation prefixes. */
  promptTokens: TokenRange.default([2, 8]),
  /** Samples (prefix -> completion) written per model. */
  samples: nonNegInt.default(10),
  /**
   * scenario rlhf: a non-private evaluation reward model, used only at test time (as the paper's
   * TL;DR evaluation): trained on gold-labelled pairs of the pretrained model's completions of
   * public prefixes (the classifier's public reviews), never on D2; 0 pairs turns it off.
   */
  rewardModelPairs: nonNegInt.default(2000),
}).strict();

/** Overrides that apply only when epsilon = inf (the paper's non-private settings). */
const RmFields = {
  /** Expected (Poisson) batch of preference pairs in DP mode; the fixed batch otherwise. */
  batchSize: posInt,
  epochs: posNum,
  lr: posNum,
  maxGradNorm: posNum,
  weightDecay: z.number().min(0),
  microBatchSize: nonNegInt,
};
/**
 * scenario rlhf: the DP reward model (PAPER.md Eq. 1) on D2. Its pairs come from a gold labeller:
 * each D2 prefix gets two completions sampled from the (DP) SFT model, and the public sentiment
 * classifier says which is preferred. The model is the public pretrained base with LoRA and a
 * scalar head (the paper uses the base model for every reward model).
 */
export const RmSchema = z.object({
  batchSize: RmFields.batchSize.default(64),
  epochs: RmFields.epochs.default(4),
  lr: RmFields.lr.default(3e-3),
  maxGradNorm: RmFields.maxGradNorm.default(1),
  weightDecay: RmFields.weightDecay.default(0.01),
  microBatchSize: RmFields.microBatchSize.default(0),
  /** Prompt (prefix) length range of a pair, in tokens. */
  promptTokens: TokenRange.default([2, 8]),
  /** Length of each sampled completion, in tokens. */
  responseTokens: posInt.default(16),
  /** scenario reward-model: tokens kept of each prompt + response (its end, where the response is). */
  maxTokens: posInt.default(64),
  temperature: z.number().min(0).default(1),
  /**
   * Where the scalar head's reward comes from: "last", the head at the last token (the usual reward
   * model, the paper's); "mean", the head averaged over every token of prompt and response, which
   * learns additive, word-level preferences (such as the n-gram gold labeller's) from fewer pairs.
   * On HH-RLHF dialogues "mean" did worse under DP than "last" (README).
   */
  pooling: z.enum(["last", "mean"]).default("last"),
}).strict();

export const NonPrivateSchema = z.object({
  sft: z.object(SftFields).partial().strict().default({}),
  rm: z.object(RmFields).partial().strict().default({}),
  ppo: z.object(PpoFields).partial().strict().default({}),
  /**
   * Split D into disjoint D1 / D3 by the keyed per-record hash as a DP run with parallel
   * composition does, instead of giving all of D to both stages: the like-for-like eps = inf
   * reference of a sweep (same data per stage as the DP columns).
   */
  disjointStages: z.boolean().default(false),
}).strict();

export const SweepSchema = z.object({
  epsilons: z.array(Epsilon).nonempty().default([Infinity, 8, 4, 2, 1]),
  seeds: z.array(nonNegInt).nonempty().default([0, 1, 2]),
  /**
   * With eps = inf in `epsilons`, also run eps = inf with the DP columns' own settings (no
   * `nonPrivate` overrides): the like-for-like reference of the recovery ratio (table.ts).
   */
  infWithDpSettings: z.boolean().default(true),
  /**
   * With eps = inf in `epsilons`, run the `nonPrivate` recipe's column (the paper's non-private
   * settings); false keeps only the like-for-like column (a large D makes the recipe's many small
   * steps slow).
   */
  nonPrivateRecipe: z.boolean().default(true),
}).strict();

export const ConfigSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only").default("run"),
  /** Seed of the model initialisation and (only with privacy.reproducible) of the private randomness. */
  seed: nonNegInt.default(0),
  /**
   * classifier: PPO against the public sentiment classifier (the paper's scenario 1). rlhf: a DP
   * reward model is learned on D2 from gold-labelled preference pairs, and PPO optimises it
   * (scenario 2's method, on IMDb); D1, D2 and D3 are disjoint per record. reward-model: only a
   * DP reward model, trained on human preference pairs from a file (`data.preferences`, e.g.
   * HH-RLHF) and measured on a public held-out slice of it.
   */
  scenario: z.enum(["classifier", "rlhf", "reward-model"]).default("classifier"),
  /** Data directory holding imdb/; else --data-dir, DPALIGN_DATA_DIR or the defaults. */
  dataDir: z.string().optional(),
  /** Sampled batches between checkpoints (and ledger entries) inside a training stage. */
  checkpointEvery: posInt.default(25),
  /** Device for the worker ("" = the worker's default). */
  device: z.string().default(""),
  /**
   * Data-parallel workers on this machine (README "Several workers"): each sampled batch is split
   * over them and one all-reduce joins their gradients, the noise added once; 1: a single worker.
   */
  workers: posInt.default(1),
  data: DataSchema.default({}),
  model: ModelSchema.default({}),
  pretrain: PretrainSchema.default({}),
  reward: RewardSchema.default({}),
  privacy: PrivacySchema.default({}),
  sft: SftSchema.default({}),
  ppo: PpoSchema.default({}),
  rm: RmSchema.default({}),
  eval: EvalSchema.default({}),
  nonPrivate: NonPrivateSchema.default({}),
  sweep: SweepSchema.default({}),
}).strict().superRefine((c, ctx) => {
  if (c.scenario === "rlhf" && c.ppo.reward !== "dp") {
    ctx.addIssue({
      code: "custom", path: ["ppo", "reward"],
      message: `"${c.ppo.reward}" is a test-time model in scenario rlhf (it judges the aligned policy); PPO trains against the DP reward model ("dp"). For PPO against the public classifier use scenario: classifier`,
    });
  }
  if (c.scenario === "rlhf" && c.data.sftFraction + c.data.rmFraction >= 1) {
    ctx.addIssue({ code: "custom", path: ["data", "rmFraction"], message: `data.sftFraction + data.rmFraction must be below 1 (D3 gets the rest), got ${c.data.sftFraction} + ${c.data.rmFraction}` });
  }
});

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** Formats zod issues as `field.path: message` lines. */
export function formatIssues(err: z.ZodError, where: string): string {
  const lines = err.issues.map((i) => {
    const path = i.path.length ? i.path.join(".") : "(top level)";
    let msg = i.message;
    if (i.code === "unrecognized_keys") msg = `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(", ")}`;
    if (i.code === "invalid_type" && i.received === "undefined") msg = "is required";
    return `  ${path}: ${msg}`;
  });
  return `${where}: invalid config\n${lines.join("\n")}`;
}

/** Validates a parsed object; `where` names the source in errors. */
export function parseConfig(raw: unknown, where = "config"): Config {
  const r = ConfigSchema.safeParse(raw ?? {});
  if (!r.success) throw new ConfigError(formatIssues(r.error, where));
  return r.data;
}

/** Reads a YAML or JSON config file (JSON is YAML) and validates it. */
export function loadConfigFile(file: string): Config {
  if (!existsSync(file)) throw new ConfigError(`${file}: no such config file`);
  const st = statSync(file);
  if (!st.isFile()) throw new ConfigError(`${file}: ${st.isDirectory() ? "is a directory" : "is not a regular file"}; give a YAML or JSON config file such as configs/demo.yaml`);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(`${file}: cannot read the config file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = file.endsWith(".json") ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    if (e instanceof YAMLParseError) {
      const pos = e.linePos?.[0];
      throw new ConfigError(`${file}${pos ? `:${pos.line}:${pos.col}` : ""}: not valid YAML (${e.message.split("\n")[0]})`);
    }
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (raw !== null && raw !== undefined && (typeof raw !== "object" || Array.isArray(raw))) {
    throw new ConfigError(`${file}: the config must be a mapping of fields, got ${Array.isArray(raw) ? "a list" : typeof raw}`);
  }
  return parseConfig(raw, file);
}

/** Deep-merges `over` into `base` (objects merge, everything else replaces). */
export function deepMerge<T>(base: T, over: unknown): T {
  if (over === undefined) return base;
  if (typeof base !== "object" || base === null || Array.isArray(base) || typeof over !== "object" || over === null || Array.isArray(over)) {
    return over as T;
  }
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over as Record<string, unknown>)) out[k] = deepMerge(out[k], v);
  return out as T;
}

/** The stage settings that apply at this epsilon: non-private overrides merged in when eps = inf. */
export function effectiveStages(cfg: Config): { sft: Config["sft"]; rm: Config["rm"]; ppo: Config["ppo"] } {
  if (Number.isFinite(cfg.privacy.epsilon)) return { sft: cfg.sft, rm: cfg.rm, ppo: cfg.ppo };
  return { sft: { ...cfg.sft, ...cfg.nonPrivate.sft }, rm: { ...cfg.rm, ...cfg.nonPrivate.rm }, ppo: { ...cfg.ppo, ...cfg.nonPrivate.ppo } };
}
