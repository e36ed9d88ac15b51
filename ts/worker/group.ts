/**
 * WorkerGroup: N workers in one torch.distributed process group, behind the same RpcCaller face as
 * one WorkerClient, so that `new WorkerApi(group)` and every role and stage above it work unchanged.
 *
 * The control plane stays the single controller (DESIGN.md: sampling and accounting are TS's):
 *  - models, checkpoints to load: every rank;
 *  - a train step: the stage draws its Poisson batch exactly as with one worker; the group splits
 *    the rows over the ranks (balanced by token count), each rank sums its clipped per-example
 *    gradients, the worker all-reduces them, rank 0 alone adds the noise, and every rank applies the
 *    same update. The group checks each step's reports: every rank saw the whole batch's count, the
 *    ranks' shares add up to it, and exactly one rank added noise (none in a step without noise);
 *  - generation and scoring: rows split over the ranks, results concatenated in order;
 *  - saving a checkpoint: every rank's digest of its trainable state must agree, then rank 0 saves.
 * A rank that dies, or a rendezvous that times out, fails the call with a WorkerCrashedError naming
 * the rank; the group then refuses further calls until restart() (the run resumes from its last
 * checkpoint, as with one worker).
 *
 * Ranks are WorkerClients: spawned here (WorkerGroup.spawn) or already connected by the caller
 * (WorkerGroup.fromClients, e.g. remote workers), so the group is the same either way.
 */
import { createServer } from "node:net";
import { cpus } from "node:os";
import type { Method, ReplyOf, RequestOf, TrainStepReply } from "../protocol/messages.js";
import type { CallOptions, RpcCaller } from "../protocol/rpc.js";
import { Tensor, type TensorMap } from "../protocol/tensor.js";
import { WorkerClient, type WorkerClientOptions } from "../transport/client.js";
import { WorkerCrashedError, WorkerRequestError } from "../transport/errors.js";
import { DpalignError } from "../util/errors.js";

export interface WorkerGroupOptions {
  /** Rendezvous and collective timeout in seconds (default 120): a missing rank fails, never hangs. */
  timeoutS?: number;
  /** "gloo" (CPU tensors, the default) or "nccl" (CUDA tensors). */
  backend?: "gloo" | "nccl";
  /** Rank 0's address as the other ranks reach it (default 127.0.0.1: local workers). */
  masterAddr?: string;
  /** Rendezvous port on masterAddr (default: a free port of this machine). */
  masterPort?: number;
}

export interface SpawnGroupOptions extends WorkerGroupOptions, Omit<WorkerClientOptions, "onStderr" | "endpoint"> {
  /** Torch intra-op threads per worker (default: this machine's cores divided by the workers, at least 1). */
  torchThreads?: number;
  /** Give rank r the GPU r alone (CUDA_VISIBLE_DEVICES), for nccl on one machine. */
  gpuPerRank?: boolean;
  onStderr?: (rank: number, line: string) => void;
}

/** Anything that serves the worker protocol for a pipeline: one WorkerClient or a WorkerGroup. */
export interface Workers extends RpcCaller {
  readonly state: string;
  close(): Promise<void>;
  restart(): Promise<void>;
}

/** One worker (`n` = 1: exactly as before, no process group) or a group of `n` local workers. */
export async function spawnWorkers(n: number, opts: SpawnGroupOptions = {}): Promise<Workers> {
  if (n <= 1) {
    const { onStderr, torchThreads: _t, gpuPerRank: _g, timeoutS: _s, backend: _b, masterAddr: _a, masterPort: _p, ...rest } = opts;
    return WorkerClient.spawn({ ...rest, ...(onStderr ? { onStderr: (l: string) => onStderr(0, l) } : {}) });
  }
  return WorkerGroup.spawn(n, opts);
}

/**
 * The workers of a pipeline run: `n` local workers on `device` (the config's `device` and
 * `workers`); nccl with one GPU per rank on CUDA, gloo otherwise. stderr lines carry their rank.
 */
export function spawnPipelineWorkers(n: number, device: string, onStderr?: (line: string) => void): Promise<Workers> {
  const cuda = device.startsWith("cuda");
  return spawnWorkers(n, {
    ...(cuda ? { backend: "nccl" as const, gpuPerRank: true } : {}),
    ...(onStderr ? { onStderr: (rank: number, line: string) => onStderr(n > 1 ? `[rank ${rank}] ${line}` : line) } : {}),
  });
}

const DEFAULT_TIMEOUT_S = 120;
/** How long a failed step waits to see whether a rank died (its exit is noticed within ~0.1 s). */
const CRASH_GRACE_MS = 2_000;

export class WorkerGroup implements RpcCaller, Workers {
  /** Why the group can no longer be used (a rank died or a collective failed), until restart(). */
  private broken: Error | undefined;
  private closed = false;
  /** Train steps run one at a time: every rank must issue the collectives in the same order. */
  private steps: Promise<unknown> = Promise.resolve();

  private constructor(readonly ranks: readonly WorkerClient[], private readonly opts: WorkerGroupOptions) {
    ranks.forEach((c, r) => c.onCrash((e) => this.markBroken(rankCrash(r, ranks.length, e))));
  }

  /** Spawns `n` local workers, handshakes all, and brings them into one process group. */
  static async spawn(n: number, opts: SpawnGroupOptions = {}): Promise<WorkerGroup> {
    const threads = opts.torchThreads ?? Math.max(1, Math.floor(cpus().length / n));
    const { onStderr, torchThreads: _t, gpuPerRank, timeoutS, backend, masterAddr, masterPort, ...clientOpts } = opts;
    const started = await Promise.allSettled(Array.from({ length: n }, (_, r) => WorkerClient.spawn({
      ...clientOpts,
      env: {
        OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads),
        ...(gpuPerRank ? { CUDA_VISIBLE_DEVICES: String(r) } : {}), ...clientOpts.env,
      },
      ...(onStderr ? { onStderr: (l: string) => onStderr(r, l) } : {}),
    })));
    const clients = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    const failed = started.findIndex((s) => s.status === "rejected");
    if (failed >= 0) {
      await Promise.all(clients.map((c) => c.close()));
      const why = (started[failed] as PromiseRejectedResult).reason as Error;
      throw new WorkerCrashedError(`worker rank ${failed} of ${n} did not start: ${why.message}`, []);
    }
    try {
      return await WorkerGroup.fromClients(clients, { timeoutS, backend, masterAddr, masterPort });
    } catch (e) {
      await Promise.all(clients.map((c) => c.close()));
      throw e;
    }
  }

  /** A group over clients already connected and handshaken (rank = position in the list). */
  static async fromClients(clients: readonly WorkerClient[], opts: WorkerGroupOptions = {}): Promise<WorkerGroup> {
    if (clients.length < 1) throw new RangeError("a worker group needs at least one worker");
    const g = new WorkerGroup(clients, opts);
    await g.initProcessGroup();
    return g;
  }

  get size(): number {
    return this.ranks.length;
  }

  /** "ready", "crashed" (a rank died or a collective failed: restart() first) or "closed". */
  get state(): "ready" | "crashed" | "closed" {
    return this.closed ? "closed" : this.broken ? "crashed" : "ready";
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.ranks.map((c) => c.close()));
  }

  /** Fresh workers (or reconnected ones) in a fresh process group; models must be loaded again. */
  async restart(): Promise<void> {
    if (this.closed) throw new DpalignError("WORKER_CLOSED", "the worker group is closed");
    await Promise.all(this.ranks.map((c) => c.restart()));
    this.broken = undefined;
    this.steps = Promise.resolve();
    await this.initProcessGroup();
  }

  async call<M extends Method>(method: M, request: RequestOf<M>, options: CallOptions = {}): Promise<ReplyOf<M>> {
    if (this.closed) throw new DpalignError("WORKER_CLOSED", "the worker group is closed");
    if (this.broken) throw new WorkerCrashedError(`the worker group cannot be used: ${this.broken.message.split("\n")[0]}; restart it first`, []);
    const m = method as string;
    switch (m) {
      case "trainStep": {
        const run = this.steps.then(() => this.trainStep(request as RequestOf<"trainStep">, options));
        this.steps = run.catch(() => undefined);
        return run as Promise<ReplyOf<M>>;
      }
      case "generate":
        return this.generate(request as RequestOf<"generate">, options) as Promise<ReplyOf<M>>;
      case "scoreSequences":
        return this.score(request as RequestOf<"scoreSequences">, options) as Promise<ReplyOf<M>>;
      case "saveCheckpoint":
        await this.checkSameModel((request as RequestOf<"saveCheckpoint">).handle ?? "", "before saving a checkpoint");
        return this.onRank(0, method, request, options);
      case "trainableHash":
        return (await this.checkSameModel((request as RequestOf<"trainableHash">).handle ?? "", "on request")) as ReplyOf<M>;
      case "echo": case "trainTokenizer": case "tokenize": case "decode":
        // the tokenizer is the same on every rank: one answers
        return this.onRank(0, method, request, options);
      case "handshake": case "shutdown": case "initProcessGroup":
        throw new RangeError(`${m} is the group's own business; it cannot be called through WorkerGroup.call`);
      default: {
        // loadModel, unloadModel, loadCheckpoint, ping ...: every rank, rank 0's reply
        const replies = await this.onAll(method, () => request, options);
        if (m === "loadModel") sameOnAll(replies as ReplyOf<"loadModel">[], (x) => `${x.totalParameters}/${x.trainableParameters}`, "model sizes");
        if (m === "loadCheckpoint") sameOnAll(replies as ReplyOf<"loadCheckpoint">[], (x) => String(x.step), "checkpoint steps");
        return replies[0];
      }
    }
  }

  // -- the process group ------------------------------------------------------------------------
  private async initProcessGroup(): Promise<void> {
    const n = this.ranks.length;
    const timeoutS = this.opts.timeoutS ?? DEFAULT_TIMEOUT_S;
    const masterAddr = this.opts.masterAddr ?? "127.0.0.1";
    const masterPort = this.opts.masterPort ?? (await freePort());
    const backend = this.opts.backend ?? "gloo";
    const replies = await Promise.all(this.ranks.map((c, rank) =>
      c.call("initProcessGroup", { rank, worldSize: n, masterAddr, masterPort, backend, timeoutS }, { timeoutMs: timeoutS * 1000 + 30_000 })
        .catch((e: unknown) => {
          throw new WorkerCrashedError(
            `worker rank ${rank} of ${n} could not join the process group (${backend} at ${masterAddr}:${masterPort}, timeout ${timeoutS} s): ${(e as Error).message}`,
            [],
          );
        })));
    replies.forEach((r, rank) => {
      if (r.rank !== rank || r.worldSize !== n) throw new WorkerCrashedError(`worker rank ${rank} joined as rank ${r.rank} of ${r.worldSize}`, []);
    });
  }

  private markBroken(e: Error): void {
    if (!this.broken) this.broken = e;
  }

  private rankError(rank: number, e: unknown): Error {
    const n = this.ranks.length;
    if (e instanceof WorkerCrashedError) return rankCrash(rank, n, e);
    if (e instanceof WorkerRequestError) return new WorkerRequestError(e.method, e.workerCode, `(worker rank ${rank} of ${n}) ${e.message.replace(/^worker \S+: /, "")}`, e.details);
    if (e instanceof DpalignError) return new DpalignError(e.code, `worker rank ${rank} of ${n}: ${e.message}`, { cause: e, exitCode: e.exitCode });
    return e as Error;
  }

  private onRank<M extends Method>(rank: number, method: M, request: RequestOf<M>, options: CallOptions): Promise<ReplyOf<M>> {
    return this.ranks[rank].call(method, request, options).catch((e: unknown) => {
      throw this.rankError(rank, e);
    });
  }

  /** Every rank at once; the first failure fails the call at once (others may be stuck in a collective). */
  private onAll<M extends Method>(method: M, request: (rank: number) => RequestOf<M>, options: CallOptions): Promise<ReplyOf<M>[]> {
    return Promise.all(this.ranks.map((_, r) => this.onRank(r, method, request(r), options)));
  }

  private async checkSameModel(handle: string, when: string): Promise<ReplyOf<"trainableHash">> {
    const hashes = await this.onAll("trainableHash", () => ({ handle }), {});
    const differ = hashes.findIndex((h) => h.sha256 !== hashes[0].sha256 || h.step !== hashes[0].step);
    if (differ > 0) {
      const e = new DpalignError(
        "WORKER_GROUP_DIVERGED",
        `the workers of the group hold different ${handle} models ${when} (rank 0: step ${hashes[0].step}, sha256 ${hashes[0].sha256.slice(0, 12)}; rank ${differ}: step ${hashes[differ].step}, sha256 ${hashes[differ].sha256.slice(0, 12)}); the run stops. Resume it from its last checkpoint`,
        { exitCode: 3 },
      );
      this.markBroken(e);
      throw e;
    }
    return hashes[0];
  }

  // -- train steps ------------------------------------------------------------------------------
  private async trainStep(req: RequestOf<"trainStep">, options: CallOptions): Promise<TrainStepReply> {
    const batch = req.batch ?? {};
    const rows = batchRows(batch);
    const shares = splitByTokens(rowWeights(batch, rows), this.ranks.length);
    let replies: TrainStepReply[];
    try {
      replies = await this.onAll("trainStep", (r) => ({ ...req, batch: takeRowsOfMap(batch, shares[r]) }), options);
    } catch (e) {
      // A rank that dies mid-step makes its peers' all-reduce fail at once ("connection closed"),
      // often before its own exit is noticed: give that a moment, so that the error names the
      // rank that died rather than a survivor.
      const crashed = await this.crashedRank(CRASH_GRACE_MS);
      const err = crashed ?? (e as Error);
      // the other ranks may wait in the all-reduce for the one that failed: the group is done
      this.markBroken(err);
      throw err;
    }
    const dp = req.dp ?? {};
    const noisy = Boolean(dp.enabled) && (dp.noiseMultiplier ?? 0) * (dp.maxGradNorm ?? 0) > 0;
    return mergeStepReplies(replies, rows, noisy, (e) => this.markBroken(e));
  }

  /** The crash of a rank that died (waiting up to `graceMs` for one to be noticed), if any. */
  private async crashedRank(graceMs: number): Promise<WorkerCrashedError | undefined> {
    const deadline = Date.now() + graceMs;
    for (;;) {
      const r = this.ranks.findIndex((c) => c.state === "crashed");
      if (r >= 0) {
        return this.broken instanceof WorkerCrashedError ? this.broken : new WorkerCrashedError(`worker rank ${r} of ${this.ranks.length} crashed`, []);
      }
      if (Date.now() >= deadline) return undefined;
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  // -- generation and scoring ---------------------------------------------------------------------
  private async generate(req: RequestOf<"generate">, options: CallOptions): Promise<ReplyOf<"generate">> {
    const prompts = req.prompts ?? {};
    const parts = contiguousParts(batchRows(prompts), this.ranks.length);
    if (parts.length <= 1) return this.onRank(0, "generate", req, options);
    // each part's sampling seed moves with its first row, as Generator's request chunks do
    const replies = await Promise.all(parts.map((idx, r) => this.onRank(r, "generate", {
      ...req, prompts: takeRowsOfMap(prompts, idx), seed: (req.seed ?? 0) + idx[0],
    }, options)));
    return { batch: concatMaps(replies.map((x) => x.batch)), texts: replies.flatMap((x) => x.texts) };
  }

  private async score(req: RequestOf<"scoreSequences">, options: CallOptions): Promise<ReplyOf<"scoreSequences">> {
    const batch = req.batch ?? {};
    const parts = contiguousParts(batchRows(batch), this.ranks.length);
    if (parts.length <= 1) return this.onRank(0, "scoreSequences", req, options);
    const replies = await Promise.all(parts.map((idx, r) => this.onRank(r, "scoreSequences", { ...req, batch: takeRowsOfMap(batch, idx) }, options)));
    return concatMaps(replies);
  }
}

function rankCrash(rank: number, n: number, e: WorkerCrashedError): WorkerCrashedError {
  return new WorkerCrashedError(`worker rank ${rank} of ${n}: ${e.message}`, e.inFlight);
}

function sameOnAll<T>(replies: readonly T[], key: (x: T) => string, what: string): void {
  const k0 = key(replies[0]);
  const r = replies.findIndex((x) => key(x) !== k0);
  if (r > 0) throw new DpalignError("WORKER_GROUP_DIVERGED", `the workers of the group report different ${what} (rank 0: ${k0}, rank ${r}: ${key(replies[r])}); they must run the same dpalign_worker on the same files`, { exitCode: 3 });
}

/**
 * One reply for the whole logical batch: the count and the mechanism as every rank executed it
 * (checked here), statistics weighted by each rank's share. Quantiles of the per-example norms
 * merge approximately (exact minimum and maximum, example-weighted inner quantiles): they are
 * private diagnostics, not part of the mechanism.
 */
export function mergeStepReplies(replies: readonly TrainStepReply[], rows: number, noisy: boolean, onMismatch: (e: Error) => void = () => undefined): TrainStepReply {
  const fail = (msg: string): never => {
    const e = new DpalignError("MECHANISM_MISMATCH", `worker group: ${msg}; the run stops`, { exitCode: 3 });
    onMismatch(e);
    throw e;
  };
  const n = replies.length;
  replies.forEach((r, i) => {
    if (r.worldSize !== n || r.rank !== i) fail(`rank ${i} reports rank ${r.rank} of ${r.worldSize} (its process group is not this group's)`);
    if (r.examples !== rows) fail(`rank ${i} reports a step over ${r.examples} examples, ${rows} were sampled`);
    if (r.step !== replies[0].step) fail(`rank ${i} is at step ${r.step}, rank 0 at ${replies[0].step}`);
    if (r.noiseMode !== replies[0].noiseMode || r.dp !== replies[0].dp) fail(`rank ${i} ran another mechanism than rank 0`);
  });
  const shares = replies.map((r) => r.rankExamples);
  const total = shares.reduce((a, b) => a + b, 0);
  if (total !== rows) fail(`the ranks' shares (${shares.join(" + ")}) do not add up to the ${rows} sampled examples`);
  const adders = replies.filter((r) => r.addedNoise).length;
  if (adders !== (noisy ? 1 : 0)) fail(`${adders} ranks added noise to the step (${noisy ? "exactly one" : "none"} must)`);
  const weighted = (f: (r: TrainStepReply) => number) => (total ? replies.reduce((a, r) => a + r.rankExamples * f(r), 0) / total : f(replies[0]));
  const withRows = replies.filter((r) => r.rankExamples > 0);
  const q = replies[0].gradNormQuantiles.map((_, k) =>
    !withRows.length ? replies[0].gradNormQuantiles[k]
      : k === 0 ? Math.min(...withRows.map((r) => r.gradNormQuantiles[0]))
        : k === replies[0].gradNormQuantiles.length - 1 ? Math.max(...withRows.map((r) => r.gradNormQuantiles[k]))
          : weighted((r) => r.gradNormQuantiles[k]));
  const keys = [...new Set(replies.flatMap((r) => Object.keys(r.metrics)))];
  return {
    ...replies[0],
    examples: rows, rankExamples: rows, addedNoise: adders > 0, rank: 0, worldSize: n,
    loss: weighted((r) => r.loss), fractionClipped: weighted((r) => r.fractionClipped), gradNormQuantiles: q,
    metrics: Object.fromEntries(keys.map((k) => [k, weighted((r) => r.metrics[k] ?? 0)])),
  };
}

// -- splitting and joining batches ------------------------------------------------------------------
/** Rows (first dimension) of a batch; all its tensors must agree. An empty map has none. */
export function batchRows(batch: TensorMap): number {
  const counts = [...new Set(Object.values(batch).map((t) => t.shape[0] ?? 0))];
  if (counts.length > 1) throw new RangeError(`a batch's tensors disagree on the number of rows (${counts.join(", ")})`);
  return counts[0] ?? 0;
}

/** Work per row: its tokens (the sum of every `*lengths` tensor), plus one so empty rows count. */
export function rowWeights(batch: TensorMap, rows: number): number[] {
  const w = new Array<number>(rows).fill(1);
  for (const [name, t] of Object.entries(batch)) {
    if (!name.endsWith("lengths") || t.shape.length !== 1) continue;
    t.toNumbers().forEach((v, i) => (w[i] += v));
  }
  return w;
}

/**
 * Rows split into `ranks` shares of about equal work: heaviest row first to the least loaded rank
 * (ties to the lower rank), each share then in batch order. Deterministic; a share may be empty.
 */
export function splitByTokens(weights: readonly number[], ranks: number): number[][] {
  const order = weights.map((w, i) => [w, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const load = new Array<number>(ranks).fill(0);
  const shares: number[][] = Array.from({ length: ranks }, () => []);
  for (const [w, i] of order) {
    let best = 0;
    for (let r = 1; r < ranks; r++) if (load[r] < load[best]) best = r;
    load[best] += w;
    shares[best].push(i);
  }
  return shares.map((s) => s.sort((a, b) => a - b));
}

/** Rows 0..n-1 in at most `ranks` contiguous, non-empty parts of near-equal size. */
export function contiguousParts(n: number, ranks: number): number[][] {
  const k = Math.min(ranks, n);
  const out: number[][] = [];
  for (let r = 0, at = 0; r < k; r++) {
    const size = Math.floor(n / k) + (r < n % k ? 1 : 0);
    out.push(Array.from({ length: size }, (_, j) => at + j));
    at += size;
  }
  return out;
}

type Storage = Tensor["data"];
type StorageCtor = new (length: number) => Storage;

function rowStride(t: Tensor): number {
  return t.shape.slice(1).reduce((a, b) => a * b, 1);
}

export function takeRows(t: Tensor, idx: readonly number[]): Tensor {
  const stride = rowStride(t);
  const out = new (t.data.constructor as StorageCtor)(idx.length * stride);
  idx.forEach((r, j) => (out as Float64Array).set((t.data as Float64Array).subarray(r * stride, (r + 1) * stride), j * stride));
  return new Tensor(t.dtype, [idx.length, ...t.shape.slice(1)], out);
}

function takeRowsOfMap(batch: TensorMap, idx: readonly number[]): TensorMap {
  return Object.fromEntries(Object.entries(batch).map(([k, t]) => [k, takeRows(t, idx)]));
}

/** Tensors stacked along rows; 2-D ones of different widths are right-padded with 0 to the widest. */
export function concatRows(parts: readonly Tensor[]): Tensor {
  const first = parts[0];
  if (first.shape.length > 2 && parts.some((p) => p.shape.slice(1).join() !== first.shape.slice(1).join())) {
    throw new RangeError(`cannot stack tensors of shapes ${parts.map((p) => `[${p.shape.join(", ")}]`).join(", ")}`);
  }
  const width = first.shape.length === 2 ? Math.max(...parts.map((p) => p.shape[1])) : rowStride(first);
  const rows = parts.reduce((a, p) => a + p.shape[0], 0);
  const out = new (first.data.constructor as StorageCtor)(rows * width);
  let row = 0;
  for (const p of parts) {
    const s = rowStride(p);
    for (let i = 0; i < p.shape[0]; i++, row++) (out as Float64Array).set((p.data as Float64Array).subarray(i * s, (i + 1) * s), row * width);
  }
  const shape = first.shape.length === 2 ? [rows, width] : [rows, ...first.shape.slice(1)];
  return new Tensor(first.dtype, shape, out);
}

function concatMaps(parts: readonly TensorMap[]): TensorMap {
  const keys = Object.keys(parts[0]);
  return Object.fromEntries(keys.map((k) => [k, concatRows(parts.map((p) => {
    if (!p[k]) throw new RangeError(`a rank's reply lacks tensor ${k}`);
    return p[k];
  }))]));
}

/** A TCP port free on this machine right now (the rendezvous binds it moments later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
