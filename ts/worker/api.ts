/**
 * The typed face of a worker for pipeline code: `await worker.trainStep({...})` reads like a local
 * call. Every method is one request over the transport (see ts/transport/client.ts).
 */
import type { RequestOf } from "../protocol/messages.js";
import type { CallOptions, RpcCaller } from "../protocol/rpc.js";

export class WorkerApi {
  constructor(private readonly rpc: RpcCaller) {}

  ping(o?: CallOptions) { return this.rpc.call("ping", {}, o); }
  echo(r: RequestOf<"echo">, o?: CallOptions) { return this.rpc.call("echo", r, o); }
  loadModel(r: RequestOf<"loadModel">, o?: CallOptions) { return this.rpc.call("loadModel", r, o); }
  unloadModel(handle: string, o?: CallOptions) { return this.rpc.call("unloadModel", { handle }, o); }
  trainTokenizer(r: RequestOf<"trainTokenizer">, o?: CallOptions) { return this.rpc.call("trainTokenizer", r, o); }
  tokenize(r: RequestOf<"tokenize">, o?: CallOptions) { return this.rpc.call("tokenize", r, o); }
  decode(r: RequestOf<"decode">, o?: CallOptions) { return this.rpc.call("decode", r, o); }
  trainStep(r: RequestOf<"trainStep">, o?: CallOptions) { return this.rpc.call("trainStep", r, o); }
  generate(r: RequestOf<"generate">, o?: CallOptions) { return this.rpc.call("generate", r, o); }
  scoreSequences(r: RequestOf<"scoreSequences">, o?: CallOptions) { return this.rpc.call("scoreSequences", r, o); }
  saveCheckpoint(r: RequestOf<"saveCheckpoint">, o?: CallOptions) { return this.rpc.call("saveCheckpoint", r, o); }
  loadCheckpoint(r: RequestOf<"loadCheckpoint">, o?: CallOptions) { return this.rpc.call("loadCheckpoint", r, o); }
}
