/**
 * A worker stand-in for unit tests of pipeline stages: answers every request the stages make in
 * microseconds, with the shapes a real worker returns, and records the calls. Training reports
 * exactly the mechanism it was asked for (so the guard's checks pass) unless told otherwise.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Tensor } from "../../../ts/protocol/tensor.js";
import type { Method, ReplyOf, RequestOf, TrainStepReply, TrainStepRequest } from "../../../ts/protocol/messages.js";
import type { RpcCaller } from "../../../ts/protocol/rpc.js";
import { encodeRequest } from "../../../ts/transport/codec.js";
import { WorkerApi } from "../../../ts/worker/api.js";

export interface FakeCall {
  method: Method;
  request: unknown;
}

export class FakeWorker implements RpcCaller {
  readonly calls: FakeCall[] = [];
  /** Changes a train reply before it is returned (to simulate a worker that ran something else). */
  tamper?: (r: TrainStepReply, req: TrainStepRequest) => TrainStepReply;
  private steps = new Map<string, number>();

  api(): WorkerApi {
    return new WorkerApi(this);
  }

  trainSteps(handle?: string): TrainStepRequest[] {
    return this.calls.filter((c) => c.method === "trainStep").map((c) => c.request as TrainStepRequest).filter((r) => !handle || r.handle === handle);
  }

  async call<M extends Method>(method: M, request: RequestOf<M>): Promise<ReplyOf<M>> {
    encodeRequest(1, method, request); // a field the schema does not have throws here, as it would on the wire
    this.calls.push({ method, request });
    return this.answer(method, request) as ReplyOf<M>;
  }

  private answer(method: Method, req: unknown): unknown {
    switch (method) {
      case "loadModel": {
        const r = req as RequestOf<"loadModel">;
        return { handle: r.handle, totalParameters: 100, trainableParameters: 10, trainableNames: [], vocabSize: 50, maxPositions: 64, eosTokenId: 1, padTokenId: 0, device: "cpu", backend: "builtin" };
      }
      case "unloadModel":
        return {};
      case "trainStep": {
        const r = req as TrainStepRequest;
        const ids = r.batch.input_ids ?? r.batch.query_ids;
        const examples = ids ? ids.shape[0] : 0;
        const step = (this.steps.get(r.handle) ?? 0) + 1;
        this.steps.set(r.handle, step);
        const reply: TrainStepReply = {
          step, examples, loss: 1 + 0.001 * step, gradNormQuantiles: [0, 0.5, 1, 1.5, 2], fractionClipped: 0.5,
          noiseMultiplier: r.dp.enabled ? r.dp.noiseMultiplier : 0, maxGradNorm: r.dp.maxGradNorm, dp: r.dp.enabled,
          noiseMode: r.dp.enabled ? (r.dp.secureNoise ? "secure" : "seeded") : "none", noiseSeed: r.dp.noiseSeed ?? 0,
          noiseStd: r.dp.noiseMultiplier * r.dp.maxGradNorm, metrics: { clipfrac: 0.1 },
        };
        return this.tamper ? this.tamper(reply, r) : reply;
      }
      case "generate": {
        const r = req as RequestOf<"generate">;
        const b = r.prompts.input_ids.shape[0];
        const len = r.maxNewTokens;
        const rows = Array.from({ length: b }, (_, i) => Array.from({ length: len }, (_, t) => 2 + ((i + t) % 7)));
        const zeros = rows.map((row) => row.map(() => 0));
        return {
          batch: {
            response_ids: Tensor.paddedInt64(rows, 0), response_lengths: Tensor.int64(rows.map((x) => x.length)),
            logprobs: Tensor.paddedFloat32(zeros.map((z) => z.map(() => -1)), 0, len), values: Tensor.paddedFloat32(zeros, 0, len),
          },
          texts: rows.map((row) => row.join(" ")),
        };
      }
      case "scoreSequences": {
        const r = req as RequestOf<"scoreSequences">;
        const ids = r.batch.input_ids ?? r.batch.response_ids;
        const b = ids.shape[0];
        const w = r.batch.response_ids?.shape[1] ?? ids.shape[1];
        const out: Record<string, Tensor> = {};
        if (r.logprobs) out.logprobs = Tensor.paddedFloat32(Array.from({ length: b }, () => Array(w).fill(-1.1)), 0, w);
        if (r.rewards) out.rewards = Tensor.float32(Array.from({ length: b }, (_, i) => (i % 3) - 1));
        return out;
      }
      case "saveCheckpoint": {
        const r = req as RequestOf<"saveCheckpoint">;
        mkdirSync(r.dir, { recursive: true });
        const manifest = { step: this.steps.get(r.handle) ?? 0, metadata: r.metadata ?? {} };
        writeFileSync(join(r.dir, "manifest.json"), JSON.stringify(manifest));
        return { dir: r.dir, step: manifest.step, files: ["manifest.json"], metadata: manifest.metadata };
      }
      case "loadCheckpoint": {
        const r = req as RequestOf<"loadCheckpoint">;
        const m = JSON.parse(readFileSync(join(r.dir, "manifest.json"), "utf8"));
        this.steps.set(r.handle, m.step);
        return { dir: r.dir, step: m.step, files: ["manifest.json"], metadata: m.metadata };
      }
      default:
        throw new Error(`FakeWorker: ${method} is not faked`);
    }
  }
}
