/**
 * The worker as the pipeline sees it: models by role, each owning its handle, its loss and its
 * batch builders, so stage code reads `await policy.trainPpo(rows, idx, params, dp, lr)` and never
 * names a handle, a loss or a tensor. Every method is one or a few requests through WorkerApi.
 */
import type { PpoParams } from "../protocol/losses.js";
import type { CheckpointInfo, DpSpec, ModelInfo, ModelSpec, OptimizerSpec, TrainStepReply } from "../protocol/messages.js";
import type { WorkerApi } from "./api.js";
import { classificationBatch, idsBatch, lmBatch, pairwiseBatch, ppoBatch, queryResponseBatch, T, type PpoRows, type Rows } from "./batches.js";

/** Requests are cut into chunks of this many rows (memory on the worker, latency per request). */
const CHUNK = 256;

export interface StepOptions {
  dp: DpSpec;
  lr: number;
  microBatchSize?: number;
}

/** One loaded model under a handle. */
export class WorkerModel {
  constructor(readonly api: WorkerApi, readonly handle: string) {}

  load(spec: ModelSpec, optimizer?: OptimizerSpec): Promise<ModelInfo> {
    return this.api.loadModel({ handle: this.handle, spec, ...(optimizer ? { optimizer } : {}) });
  }

  async unload(): Promise<void> {
    await this.api.unloadModel(this.handle);
  }

  async save(dir: string, metadata: Record<string, string> = {}): Promise<void> {
    await this.api.saveCheckpoint({ handle: this.handle, dir, metadata });
  }

  restore(dir: string): Promise<CheckpointInfo> {
    return this.api.loadCheckpoint({ handle: this.handle, dir });
  }

  /** Token ids of texts, one row each (chunked). */
  async tokenize(texts: readonly string[], maxTokens: number, chunk = 2000): Promise<number[][]> {
    const out: number[][] = [];
    for (let i = 0; i < texts.length; i += chunk) {
      const t = await this.api.tokenize({ handle: this.handle, texts: texts.slice(i, i + chunk), maxTokens });
      out.push(...t[T.inputIds].rows(t[T.lengths].toNumbers()));
    }
    return out;
  }

  async decode(rows: Rows, pad: number): Promise<string[]> {
    return rows.length ? (await this.api.decode({ handle: this.handle, batch: idsBatch(rows, pad) })).texts : [];
  }
}

/** A causal LM trained on text (pre-training, SFT). */
export class LanguageModel extends WorkerModel {
  trainLm(rows: Rows, pad: number, o: StepOptions): Promise<TrainStepReply> {
    return this.api.trainStep({ handle: this.handle, loss: "causal_lm", batch: lmBatch(rows, pad), ...o });
  }
}

export interface Generation {
  responses: number[][];
  logprobs: number[][];
  values: number[][];
  texts: string[];
}

export interface GenerateOptions {
  maxNewTokens: number;
  minNewTokens: number;
  temperature: number;
  topK: number;
  seed: number;
  /** Also return the value head's estimates (policies). */
  values: boolean;
}

/** A model that completes prompts (the PPO policy, and any model under evaluation). */
export class Generator extends WorkerModel {
  async generate(prompts: Rows, pad: number, o: GenerateOptions): Promise<Generation> {
    const out: Generation = { responses: [], logprobs: [], values: [], texts: [] };
    for (let i = 0; i < prompts.length; i += CHUNK) {
      const g = await this.api.generate({
        handle: this.handle, prompts: idsBatch(prompts.slice(i, i + CHUNK), pad), maxNewTokens: o.maxNewTokens, minNewTokens: o.minNewTokens,
        temperature: o.temperature, topK: o.topK, seed: o.seed + i, returnLogprobs: true, returnValues: o.values,
      });
      const lengths = g.batch[T.responseLengths].toNumbers();
      out.responses.push(...g.batch[T.responseIds].rows(lengths));
      out.logprobs.push(...g.batch[T.logprobs].rows(lengths));
      if (o.values) out.values.push(...g.batch[T.values].rows(lengths));
      out.texts.push(...g.texts);
    }
    return out;
  }
}

/** The PPO policy with its value head. */
export class Policy extends Generator {
  trainPpo(rollout: PpoRows, idx: readonly number[], pad: number, params: PpoParams, o: StepOptions): Promise<TrainStepReply> {
    return this.api.trainStep({
      handle: this.handle, loss: "ppo", batch: ppoBatch(rollout, idx, pad), ...o, ppo: params,
    });
  }
}

/** The frozen reference model of the KL penalty (Eq. 2). */
export class Reference extends WorkerModel {
  /** log pi_ref(response token | prefix), one row per response. */
  async logprobs(queries: Rows, responses: Rows, pad: number): Promise<number[][]> {
    const out: number[][] = [];
    for (let i = 0; i < queries.length; i += CHUNK) {
      const rs = responses.slice(i, i + CHUNK);
      const s = await this.api.scoreSequences({ handle: this.handle, batch: queryResponseBatch(queries.slice(i, i + CHUNK), rs, pad), logprobs: true });
      out.push(...s.logprobs.rows(rs.map((r) => r.length)));
    }
    return out;
  }
}

/** A model with a scalar reward head: the public classifier, or a reward model. */
export class RewardModel extends WorkerModel {
  /** The reward (positive-class logit) of each token row. */
  async score(rows: Rows, pad: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < rows.length; i += CHUNK) {
      const part = rows.slice(i, i + CHUNK).map((r) => (r.length ? r : [pad]));
      const rep = await this.api.scoreSequences({ handle: this.handle, batch: idsBatch(part, pad), rewards: true });
      out.push(...rep.rewards.toNumbers());
    }
    return out;
  }

  /**
   * The reward of each prompt + completion, sent as (query, response) pairs: the same score as
   * score() of the joined rows for token models, and a Python reward function (reward.kind python)
   * receives the prompts and completions apart.
   */
  async scorePairs(queries: Rows, responses: Rows, pad: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < queries.length; i += CHUNK) {
      const rep = await this.api.scoreSequences({ handle: this.handle, batch: queryResponseBatch(queries.slice(i, i + CHUNK), responses.slice(i, i + CHUNK), pad), rewards: true });
      out.push(...rep.rewards.toNumbers());
    }
    return out;
  }

  /** One step of the pairwise loss (Eq. 1): one example per (chosen, rejected) pair. */
  trainPairwise(chosen: Rows, rejected: Rows, pad: number, o: StepOptions): Promise<TrainStepReply> {
    return this.api.trainStep({ handle: this.handle, loss: "pairwise_reward", batch: pairwiseBatch(chosen, rejected, pad), ...o });
  }

  trainClassifier(rows: Rows, labels: readonly number[], pad: number, o: StepOptions): Promise<TrainStepReply> {
    return this.api.trainStep({ handle: this.handle, loss: "classification", batch: classificationBatch(rows, labels, pad), ...o });
  }
}
