import { describe, expect, it } from "vitest";
import protobuf from "protobufjs";
import { decodeReply, decodeRequest, encodeErrorReply, encodeReply, encodeRequest, METHODS, PROTO_FILE, PROTOCOL_VERSION, TensorDecodeError } from "../../../ts/transport/codec.js";
import { Tensor } from "../../../ts/protocol/tensor.js";
import type { Method, ReplyBodyOf, ReplyOf, RequestOf } from "../../../ts/protocol/messages.js";

const root = protobuf.loadSync(PROTO_FILE);
const Request = root.lookupType("dpalign.worker.v1.Request");

const t = Tensor.float32([1, 2, 3, 4, 5, 6], [2, 3]);
const ids = Tensor.paddedInt64([[1, 2, 3], [4]], 0);

/**
 * One representative body per request method: every message type crosses the codec. Typed by the
 * generated types (test/ts/protocol/typecheck.test.ts compiles this file), so a schema change that
 * these bodies no longer fit fails there.
 */
const requests: { [M in Method]: RequestOf<M> } = {
  handshake: { protocolVersion: PROTOCOL_VERSION, client: "test", heartbeatIntervalMs: 100, sessionId: "ab12", sessionTimeoutMs: 60_000 },
  ping: {},
  shutdown: { reason: "done", endSession: true },
  echo: { batch: { t, ids }, payload: Buffer.from([1, 2]) /* the codec decodes bytes as Buffers */, sleepMs: 3, raiseError: "" },
  probePath: { path: "/tmp/.dpalign-probe-1", expected: Buffer.from([7, 8]), answerPath: "/tmp/.dpalign-probe-1.worker", answer: Buffer.from([9]) },
  loadModel: {
    handle: "policy",
    spec: { tiny: { nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 64, tokenizerDir: "/tmp/tok" }, lora: { rank: 4, alpha: 8, dropout: 0, targetModules: ["c_attn"] }, valueHead: true, initSeed: 3 },
    optimizer: { name: "sgd", lr: 1e-3, weightDecay: 0.01 },
  },
  unloadModel: { handle: "policy" },
  trainTokenizer: { texts: ["a b", "c"], vocabSize: 300, outDir: "/tmp/x" },
  tokenize: { handle: "p", texts: ["hello"], maxTokens: 8, appendEos: true },
  decode: { handle: "p", batch: { input_ids: ids, lengths: Tensor.int64([3, 1]) } },
  trainStep: {
    handle: "p", loss: "ppo", batch: { input_ids: ids }, lr: 1e-3, microBatchSize: 4,
    dp: { enabled: true, noiseMultiplier: 1.1, maxGradNorm: 1, expectedBatchSize: 8, secureNoise: false, noiseSeed: 9 },
    ppo: { clipRange: 0.2, clipRangeValue: 0.3, vfCoef: 0 }, // optional fields: a 0 is sent, not dropped
  },
  generate: { handle: "p", prompts: { input_ids: ids }, maxNewTokens: 8, temperature: 1, topK: 0, topP: 1, seed: 4, returnLogprobs: true },
  scoreSequences: { handle: "p", batch: { input_ids: ids }, logprobs: true, values: true, rewards: false },
  saveCheckpoint: { handle: "p", dir: "/tmp/c", metadata: { stage: "sft" } },
  loadCheckpoint: { handle: "p", dir: "/tmp/c" },
  initProcessGroup: { rank: 1, worldSize: 2, masterAddr: "127.0.0.1", masterPort: 29500, backend: "gloo", timeoutS: 30 },
  trainableHash: { handle: "p" },
};

describe("protocol codec", () => {
  it("covers every request method of the schema", () => {
    expect(new Set(Object.keys(requests))).toEqual(new Set(METHODS));
  });

  function roundTrip<M extends Method>(method: M, body: RequestOf<M>): void {
    it(`round-trips a ${method} request`, () => {
      const frames = encodeRequest(42, method, body);
      const decoded = Request.toObject(Request.decode(frames[0]), { longs: Number, oneofs: true, defaults: false }) as Record<string, unknown>;
      expect(decoded.id).toBe(42);
      expect(decoded.method).toBe(method);
      expect(decoded[method]).toBeDefined();
      const back = decodeRequest(frames);
      expect([back.id, back.method]).toEqual([42, method]);
      expect(back.body).toMatchObject(body as object);
    });
  }
  for (const method of Object.keys(requests) as Method[]) roundTrip(method, requests[method]);

  it("keeps dtype and shape in the envelope and each tensor's bytes in a frame of its own", () => {
    const frames = encodeRequest(1, "echo", { batch: { t, ids } });
    expect(frames).toHaveLength(3);
    const msg = Request.toObject(Request.decode(frames[0]), { longs: Number }) as any;
    const wt = msg.echo.batch.tensors.t;
    expect(wt.dtype).toBe("float32");
    expect(wt.shape).toEqual([2, 3]);
    expect(wt.data).toBeUndefined();
    expect(new Float32Array(frames[wt.frame].slice().buffer)).toEqual(t.data);
    expect(msg.echo.batch.tensors.ids.shape).toEqual([2, 3]);
    expect(new Set([wt.frame, msg.echo.batch.tensors.ids.frame])).toEqual(new Set([1, 2]));
  });

  it("sends tensor bytes without copying them", () => {
    const frames = encodeRequest(1, "echo", { batch: { t } });
    expect(frames[1].buffer).toBe(t.data.buffer);
    expect(frames[1].byteOffset).toBe(t.data.byteOffset);
  });

  it("decodes request frames as a fake worker needs them", () => {
    const { id, method, body } = decodeRequest(encodeRequest(8, "echo", { batch: { t, ids }, sleepMs: 2 }));
    expect([id, method, body.sleepMs]).toEqual([8, "echo", 2]);
    expect((body.batch as Record<string, Tensor>).ids.rows()).toEqual(ids.rows());
  });

  const replies: { [M in Method]?: ReplyOf<M> } = {
    handshake: { protocolVersion: 1, workerVersion: "0.1.0", pid: 7, heartbeatIntervalMs: 1000, hostname: "gpu-1", capabilities: { pythonVersion: "3.11", torchVersion: "2", device: "cpu", devices: ["cpu"], backends: ["builtin"], methods: ["ping"], packages: { peft: "1" } } },
    ping: { workerTimeS: 1.5 },
    echo: { batch: { t }, payload: Buffer.from([9]) },
    probePath: { found: true, matches: false, error: "the file there holds other content", answered: true, answerError: "", hostname: "gpu-1" },
    loadModel: { handle: "p", totalParameters: 100, trainableParameters: 10, trainableNames: ["a"], vocabSize: 300, maxPositions: 64, eosTokenId: 1, padTokenId: 0, device: "cpu", backend: "builtin" },
    tokenize: { input_ids: ids },
    trainStep: { step: 3, examples: 5, loss: 0.5, gradNormQuantiles: [0, 1, 2, 3, 4], fractionClipped: 0.2, noiseMultiplier: 1.1, maxGradNorm: 1, dp: true, noiseMode: "seeded", noiseSeed: 0, noiseStd: 1.1, metrics: { kl: 0.1 }, rankExamples: 2, addedNoise: true, rank: 0, worldSize: 2 },
    generate: { batch: { t }, texts: ["x"] },
    saveCheckpoint: { dir: "/tmp", step: 3, files: ["a.safetensors"], metadata: {} },
    initProcessGroup: { rank: 1, worldSize: 2, backend: "gloo", device: "cpu" },
    trainableHash: { sha256: "9f86d081884c7d65", step: 3 },
  };

  function decodes<M extends Method>(method: M, body: ReplyOf<M>): void {
    it(`decodes a ${method} reply`, () => {
      const decoded = decodeReply(encodeReply(5, method, body as unknown as ReplyBodyOf<M>)); // a full reply is a valid body
      expect(decoded.kind).toBe("result");
      if (decoded.kind !== "result") return;
      expect(decoded.id).toBe(5);
      expect(decoded.method).toBe(method);
      expect(decoded.result).toEqual(body);
    });
  }
  for (const method of Object.keys(replies) as Method[]) decodes(method, replies[method] as ReplyOf<typeof method>);

  it("decodes typed errors and heartbeats", () => {
    const Reply = root.lookupType("dpalign.worker.v1.Reply");
    const err = decodeReply(encodeErrorReply(3, "INVALID_ARGUMENT", "bad", { field: "lr" }));
    expect(err).toEqual({ id: 3, kind: "error", error: { code: "INVALID_ARGUMENT", message: "bad", details: { field: "lr" } } });
    const hb = decodeReply(Reply.encode(Reply.fromObject({ id: 0, heartbeat: { sequence: 4, inFlight: 1, uptimeS: 2 } })).finish());
    expect(hb.kind).toBe("heartbeat");
  });

  it("makes received tensors views of their frames, copying only a misaligned frame", () => {
    const frames = encodeReply(6, "echo", { batch: { t } });
    const aligned = decodeReply(frames);
    if (aligned.kind !== "result") throw new Error("expected a result");
    const got = (aligned.result as { batch: Record<string, Tensor> }).batch.t;
    expect(got.data.buffer).toBe(frames[1].buffer);
    expect(got.toNumbers()).toEqual([1, 2, 3, 4, 5, 6]);
    const odd = new Uint8Array(frames[1].byteLength + 1);
    odd.set(frames[1], 1);
    const misaligned = decodeReply([frames[0], odd.subarray(1)]);
    if (misaligned.kind !== "result") throw new Error("expected a result");
    const copied = (misaligned.result as { batch: Record<string, Tensor> }).batch.t;
    expect(copied.data.buffer).not.toBe(odd.buffer);
    expect(copied.toNumbers()).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("refuses tensors that do not match their frames, naming the reply", () => {
    const [envelope, bytes] = encodeReply(11, "echo", { batch: { t } });
    const missing = (() => { try { decodeReply([envelope]); } catch (e) { return e; } })() as TensorDecodeError;
    expect(missing).toBeInstanceOf(TensorDecodeError);
    expect(missing.message).toMatch(/t: refers to frame 1, but the message has 0 tensor frame/);
    expect(missing.replyId).toBe(11);
    expect(() => decodeReply([envelope, bytes.subarray(4)])).toThrow(/t: frame 1: 20 bytes do not match dtype float32 and shape \[2, 3\]/);
  });

  it("rejects an unknown method and undecodable bytes", () => {
    expect(() => encodeRequest(1, "fly" as Method, {})).toThrow(/unknown worker method "fly"/);
    expect(() => decodeReply(new Uint8Array([0xff, 0xff, 0xff]))).toThrow();
  });
});

describe("Tensor", () => {
  it("pads ragged rows and reads them back", () => {
    expect(ids.shape).toEqual([2, 3]);
    expect(ids.rows([3, 1])).toEqual([[1, 2, 3], [4]]);
  });

  it("checks byte counts against dtype and shape", () => {
    expect(() => Tensor.fromBytes("float32", [3], new Uint8Array(8))).toThrow(/do not match/);
    expect(Tensor.fromBytes("int64", [0, 4], new Uint8Array(0)).shape).toEqual([0, 4]);
  });
});

describe("protocol enums", () => {
  it("travel as numbers and are read back as their names", () => {
    const frames = encodeRequest(1, "trainStep", { handle: "p", loss: "dirac_canary" });
    const wire = Request.toObject(Request.decode(frames[0]), { enums: Number }) as { trainStep: { loss: number } };
    expect(wire.trainStep.loss).toBe(5);
    expect(decodeRequest(frames).body.loss).toBe("dirac_canary");
    const reply = decodeReply(encodeReply(2, "trainStep", { noiseMode: "none" }));
    expect(reply.kind === "result" && (reply.result as { noiseMode: string }).noiseMode).toBe("none");
  });
});
