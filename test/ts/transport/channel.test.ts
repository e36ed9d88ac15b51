/**
 * RpcChannel alone, against a fake worker: a zeromq.js ROUTER in this test that decodes requests
 * and answers as the test tells it. Runs over ipc and tcp loopback with a fresh address per test.
 */
import { afterEach, describe, expect, it } from "vitest";
import { rmSync } from "node:fs";
import * as zmq from "zeromq";
import { RpcChannel } from "../../../ts/transport/channel.js";
import { decodeRequest, encodeErrorReply, encodeReply, PROTOCOL_VERSION } from "../../../ts/transport/codec.js";
import { freshIpcEndpoint, ipcPath } from "../../../ts/transport/endpoint.js";
import {
  ProtocolMismatchError,
  RequestTimeoutError,
  WorkerClosedError,
  WorkerProtocolError,
  WorkerRequestError,
} from "../../../ts/transport/errors.js";
import { Tensor } from "../../../ts/protocol/tensor.js";

interface Received {
  id: number;
  method: string;
  body: Record<string, unknown>;
  frames: Buffer[];
}
type Answer = Uint8Array | Uint8Array[] | undefined;

/** A ROUTER that answers each request with whatever `answer` returns (undefined: no reply). */
class FakeWorker {
  readonly router = new zmq.Router({ linger: 0 });
  readonly received: Received[] = [];
  answer: (r: Received) => Answer = (r) => encodeReply(r.id, "ping", { workerTimeS: 1 });
  private peer: Buffer | undefined;
  private sends: Promise<void> = Promise.resolve();

  static async bind(address: string): Promise<{ fake: FakeWorker; endpoint: string }> {
    const fake = new FakeWorker();
    await fake.router.bind(address);
    void fake.loop();
    return { fake, endpoint: fake.router.lastEndpoint! };
  }

  /** Sends frames to the client (queued: one send at a time per socket). */
  send(frames: Answer): Promise<void> {
    const peer = this.peer;
    if (!peer || !frames) return Promise.resolve();
    this.sends = this.sends.then(() => this.router.send([peer, ...(Array.isArray(frames) ? frames : [frames])]));
    return this.sends;
  }

  heartbeat(): Promise<void> {
    return this.send(encodeReply(0, "heartbeat", { sequence: 1, inFlight: 0, uptimeS: 1 }));
  }

  close(): void {
    const file = ipcPath(this.router.lastEndpoint ?? "");
    this.router.close();
    if (file) rmSync(file, { force: true });
  }

  private async loop(): Promise<void> {
    try {
      for await (const [identity, ...frames] of this.router) {
        this.peer = identity;
        const r = { ...decodeRequest(frames), frames };
        this.received.push(r);
        void this.send(this.answer(r));
      }
    } catch {
      // closed
    }
  }
}

const transports: Record<string, () => string> = {
  ipc: () => freshIpcEndpoint(),
  tcp: () => "tcp://127.0.0.1:*",
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const [name, address] of Object.entries(transports)) {
  describe(`RpcChannel over ${name}`, () => {
    const open: { close(): void }[] = [];
    afterEach(() => {
      for (const o of open.splice(0)) o.close();
    });

    async function setup(): Promise<{ fake: FakeWorker; channel: RpcChannel }> {
      const { fake, endpoint } = await FakeWorker.bind(address());
      const channel = new RpcChannel(endpoint);
      open.push(channel, fake);
      return { fake, channel };
    }

    it("numbers requests and matches replies by id, in any order", async () => {
      const { fake, channel } = await setup();
      fake.answer = () => undefined;
      const calls = [0, 1, 2, 3, 4].map((i) => channel.request("echo", { payload: new Uint8Array([i]) }, 5_000));
      while (fake.received.length < 5) await sleep(5);
      expect(new Set(fake.received.map((r) => r.id)).size).toBe(5);
      expect(channel.inFlight()).toEqual(["echo", "echo", "echo", "echo", "echo"]);
      for (const r of [...fake.received].reverse()) await fake.send(encodeReply(r.id, "echo", { payload: r.body.payload as Uint8Array }));
      const replies = (await Promise.all(calls)) as { payload: Uint8Array }[];
      expect(replies.map((r) => r.payload[0])).toEqual([0, 1, 2, 3, 4]);
      expect(channel.inFlight()).toEqual([]);
    });

    it("sends each tensor as a frame of its own and reads reply tensors from frames", async () => {
      const { fake, channel } = await setup();
      const big = new Tensor("float32", [1000, 3], new Float32Array(3000).map((_, i) => i));
      const ids = Tensor.int64([7, 8, 9]);
      fake.answer = (r) => encodeReply(r.id, "echo", { batch: r.body.batch as object });
      const reply = (await channel.request("echo", { batch: { big, ids } }, 5_000)) as { batch: Record<string, Tensor> };
      const req = fake.received[0];
      expect(req.frames).toHaveLength(3);
      expect(req.frames.slice(1).map((f) => f.length).sort((a, b) => a - b)).toEqual([24, 12_000]);
      expect(req.frames[0].length).toBeLessThan(100); // the envelope carries no tensor bytes
      expect(reply.batch.big.shape).toEqual([1000, 3]);
      expect(Array.from(reply.batch.big.data as Float32Array)).toEqual(Array.from(big.data));
      expect(reply.batch.ids.toNumbers()).toEqual([7, 8, 9]);
    });

    it("turns a typed error reply into WorkerRequestError", async () => {
      const { fake, channel } = await setup();
      fake.answer = (r) => encodeErrorReply(r.id, "INVALID_ARGUMENT", "lr must be positive", { field: "lr" });
      const err = await channel.request("trainStep", { handle: "p" }, 5_000).catch((e) => e);
      expect(err).toBeInstanceOf(WorkerRequestError);
      expect(err.workerCode).toBe("INVALID_ARGUMENT");
      expect(err.details).toEqual({ field: "lr" });
      expect(err.message).toBe("worker trainStep: lr must be positive");
    });

    it("fails a request whose reply tensors do not match the frames, and keeps working", async () => {
      const { fake, channel } = await setup();
      fake.answer = (r) => [encodeReply(r.id, "echo", { batch: { t: Tensor.float32([1, 2]) } })[0]]; // frame left out
      const err = await channel.request("echo", {}, 5_000).catch((e) => e);
      expect(err).toBeInstanceOf(WorkerProtocolError);
      expect(err.message).toMatch(/worker echo: the reply does not decode \(t: refers to frame 1, but the message has 0 tensor frame/);
      fake.answer = (r) => encodeReply(r.id, "ping", { workerTimeS: 2 });
      await expect(channel.request("ping", {}, 5_000)).resolves.toEqual({ workerTimeS: 2 });
    });

    it("times out a request, drops its late reply, and keeps working", async () => {
      const { fake, channel } = await setup();
      fake.answer = () => undefined;
      const err = await channel.request("echo", { sleepMs: 1 }, 100).catch((e) => e);
      expect(err).toBeInstanceOf(RequestTimeoutError);
      expect(channel.inFlight()).toEqual([]);
      await fake.send(encodeReply(fake.received[0].id, "echo", {})); // late: ignored
      fake.answer = (r) => encodeReply(r.id, "ping", { workerTimeS: 3 });
      await expect(channel.request("ping", {}, 5_000)).resolves.toEqual({ workerTimeS: 3 });
    });

    it("handshakes, and names both versions when the worker refuses", async () => {
      const { fake, channel } = await setup();
      fake.answer = (r) => {
        const v = (r.body as { protocolVersion: number }).protocolVersion;
        return v === PROTOCOL_VERSION
          ? encodeReply(r.id, "handshake", { protocolVersion: v, workerVersion: "fake", pid: 1, heartbeatIntervalMs: 100 })
          : encodeErrorReply(r.id, "PROTOCOL_MISMATCH", `client speaks protocol version ${v}, this worker speaks version ${PROTOCOL_VERSION}`);
      };
      const ok = await channel.handshake({ protocolVersion: PROTOCOL_VERSION, client: "test" }, 5_000);
      expect(ok.workerVersion).toBe("fake");
      const err = await channel.handshake({ protocolVersion: 99, client: "test" }, 5_000).catch((e) => e);
      expect(err).toBeInstanceOf(ProtocolMismatchError);
      expect(err.message).toBe(`client speaks protocol version 99, this worker speaks version ${PROTOCOL_VERSION}`);
    });

    it("stays quiet while heartbeats come and reports silence once", async () => {
      const { fake, channel } = await setup();
      await channel.request("ping", {}, 5_000); // the fake learns the peer
      const silences: number[] = [];
      channel.watchHeartbeats(400, (ms) => silences.push(ms));
      for (let i = 0; i < 10; i++) {
        await fake.heartbeat();
        await sleep(60);
      }
      expect(silences).toEqual([]);
      await sleep(1_000);
      expect(silences).toHaveLength(1);
      expect(silences[0]).toBeGreaterThan(400);
    });

    it("fails pending and later requests with WorkerClosedError once closed", async () => {
      const { fake, channel } = await setup();
      fake.answer = () => undefined;
      const pending = channel.request("echo", {}, 5_000).catch((e) => e);
      while (fake.received.length < 1) await sleep(5);
      channel.close();
      expect(await pending).toBeInstanceOf(WorkerClosedError);
      await expect(channel.request("ping", {}, 5_000)).rejects.toBeInstanceOf(WorkerClosedError);
      expect(channel.closed).toBe(true);
    });

    it("rejects an unknown method before sending anything", async () => {
      const { fake, channel } = await setup();
      await expect(channel.request("fly", {}, 5_000)).rejects.toThrow(/unknown worker method "fly"/);
      await sleep(20);
      expect(fake.received).toEqual([]);
    });
  });
}
