/** What every stage receives: the worker API, the config and its plan, the run dir, progress. */
import type { WorkerApi } from "../worker/api.js";
import type { DpSpec, ModelSpec, OptimizerSpec } from "../protocol/messages.js";
import type { RewardModel } from "../worker/roles.js";
import type { Rng } from "../util/rng.js";
import type { SecretMode } from "./secret.js";
import type { Config } from "./config.js";
import type { RunPlan } from "./plan.js";
import type { RunDir } from "./run-dir.js";
import type { Progress } from "./progress.js";
import type { Roles } from "./data/roles.js";
import type { RunTensorBoard } from "./tensorboard.js";

export interface BaseModel {
  /** Tokenizer directory of the tiny model (empty for hf models). */
  tokenizerDir: string;
  /** Checkpoint of the pretrained base ("" for hf models: the directory itself is the base). */
  checkpoint: string;
  padId: number;
  eosId: number;
}

export interface PipelineContext {
  api: WorkerApi;
  cfg: Config;
  plan: RunPlan;
  run: RunDir;
  progress: Progress;
  /** The run's secret generator: everything that selects private records draws from it (DESIGN.md rule 7). */
  rng: Rng;
  /** "reproducible": the key follows the public seed and noise is seeded (the run is not private). */
  secretMode: SecretMode;
  /** Show statistics of private batches on the console (--verbose-private); stdout is otherwise released. */
  showPrivate: boolean;
  /** Set by a signal handler: stages stop at their next batch boundary after saving. */
  stop: StopRequest;
  roles: Roles;
  cacheDir: string;
  base: BaseModel;
  /** The public reward (the sentiment classifier), loaded for scoring. */
  reward: RewardModel;
  /** --tensorboard: released scalars (epsilon at commit points); private ones only with --verbose-private. */
  tensorboard?: RunTensorBoard;
}

export interface StopRequest {
  requested: boolean;
  signal?: string;
}

export interface SpecOptions {
  initCheckpoint?: string;
  lora?: boolean;
  valueHead?: boolean;
  rewardHead?: boolean;
  /** How a reward head's sequence reward is read (config rm.pooling); "last" when not given. */
  rewardPooling?: "last" | "mean";
  trainBase?: boolean;
  initSeed?: number;
}

/** The ModelSpec of the configured model, for a given role. */
export function modelSpec(cfg: Config, base: Pick<BaseModel, "tokenizerDir" | "checkpoint">, o: SpecOptions): ModelSpec {
  const m = cfg.model;
  const spec: ModelSpec = m.kind === "tiny"
    ? { tiny: { nLayer: m.tiny.nLayer, nHead: m.tiny.nHead, nEmbd: m.tiny.nEmbd, nPositions: m.tiny.nPositions, tokenizerDir: base.tokenizerDir } }
    : { hfPath: m.hfPath };
  spec.lora = o.lora ? { rank: m.lora.rank, alpha: m.lora.alpha, dropout: m.lora.dropout, targetModules: m.lora.targetModules } : { rank: 0, alpha: 1, targetModules: [] };
  spec.valueHead = o.valueHead ?? false;
  spec.rewardHead = o.rewardHead ?? false;
  if (o.rewardHead && o.rewardPooling) spec.rewardPooling = o.rewardPooling;
  spec.trainBase = o.trainBase ?? false;
  const init = o.initCheckpoint ?? base.checkpoint;
  if (init) spec.initCheckpoint = init;
  spec.initSeed = o.initSeed ?? cfg.seed;
  if (cfg.device) spec.device = cfg.device;
  return spec;
}

/** A non-private step (public stages): no clipping or noise; the mean over the batch. */
export function nonPrivate(batchSize: number): DpSpec {
  return { enabled: false, noiseMultiplier: 0, maxGradNorm: 1, expectedBatchSize: batchSize, secureNoise: false };
}

export function adamw(weightDecay: number): OptimizerSpec {
  return { name: "adamw", weightDecay };
}

/** Learning rate at step t of T: constant, or cosine decay with a short linear warm-up. */
export function lrAt(schedule: "constant" | "cosine", lr: number, t: number, total: number): number {
  if (schedule === "constant") return lr;
  const warm = Math.max(1, Math.floor(total * 0.05));
  if (t < warm) return (lr * (t + 1)) / warm;
  const p = (t - warm) / Math.max(1, total - warm);
  return lr * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, p)));
}
