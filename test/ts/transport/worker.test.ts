/**
 * The transport against a real Python worker, over ipc and tcp loopback (as zeromq.js runs its
 * suite over several transports).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import * as zmq from "zeromq";
import { WorkerClient } from "../../../ts/transport/client.js";
import { encodeRequest, decodeReply, PROTOCOL_VERSION } from "../../../ts/transport/codec.js";
import { ipcPath } from "../../../ts/transport/endpoint.js";
import { ProtocolMismatchError, RequestTimeoutError, WorkerClosedError, WorkerCrashedError, WorkerRequestError, WorkerStartError } from "../../../ts/transport/errors.js";
import { Tensor } from "../../../ts/protocol/tensor.js";
import { WorkerApi } from "../../../ts/worker/api.js";

let tcpPort = 27_000 + (process.pid % 2000);
const transports: Record<string, () => string | undefined> = {
  ipc: () => undefined,
  tcp: () => `tcp://127.0.0.1:${tcpPort++}`,
};

for (const [name, endpoint] of Object.entries(transports)) {
  describe(`worker over ${name}`, () => {
    let client: WorkerClient;
    let api: WorkerApi;

    beforeAll(async () => {
      client = await WorkerClient.spawn({ endpoint: endpoint(), heartbeatIntervalMs: 200 });
      api = new WorkerApi(client);
    });
    afterAll(async () => {
      await client?.close();
    });

    it("handshakes and reports capabilities", () => {
      expect(client.state).toBe("ready");
      expect(client.info.protocolVersion).toBe(PROTOCOL_VERSION);
      expect(client.info.capabilities.torchVersion).toMatch(/\d+\.\d+/);
      expect(client.info.capabilities.methods).toContain("echo");
      expect(client.info.capabilities.backends).toContain("builtin");
    });

    it("echoes tensors keeping dtype and shape", async () => {
      const batch = {
        f32: Tensor.float32([1.5, -2, 3.25, 1e-8], [2, 2]),
        f64: new Tensor("float64", [3], Float64Array.from([Math.PI, -1, 0])),
        f16: new Tensor("float16", [2], Uint16Array.from([0x3c00, 0xc000])), // 1, -2
        bf16: new Tensor("bfloat16", [2], Uint16Array.from([0x3f80, 0x4040])), // 1, 3
        i64: Tensor.int64([2n ** 60n, -5n, 0n], [3, 1]),
        empty: new Tensor("float32", [0, 7], new Float32Array(0)),
        flag: new Tensor("bool", [2], Uint8Array.from([1, 0])),
      };
      const r = await api.echo({ batch, payload: new Uint8Array([1, 2, 3]) });
      for (const [k, t] of Object.entries(batch)) {
        expect(r.batch[k].dtype, k).toBe(t.dtype);
        expect(r.batch[k].shape, k).toEqual(t.shape);
        expect(Array.from(r.batch[k].bytes()), k).toEqual(Array.from(t.bytes()));
      }
      expect(r.batch.f16.toNumbers()).toEqual([1, -2]);
      expect(r.batch.bf16.toNumbers()).toEqual([1, 3]);
      expect((r.batch.i64.data as BigInt64Array)[0]).toBe(2n ** 60n);
      expect(Array.from(r.payload)).toEqual([1, 2, 3]);
    });

    it("echoes a large tensor intact (its bytes travel as frames, not in the envelope)", async () => {
      const n = 2 * 1024 * 1024; // 8 MiB of float32
      const big = new Tensor("float32", [n / 1024, 1024], new Float32Array(n).map((_, i) => i % 9973));
      const r = await api.echo({ batch: { big, small: Tensor.int64([1, 2, 3]) } });
      expect(r.batch.big.shape).toEqual([n / 1024, 1024]);
      expect(Buffer.compare(Buffer.from(r.batch.big.bytes()), Buffer.from(big.bytes()))).toBe(0);
      expect(r.batch.small.toNumbers()).toEqual([1, 2, 3]);
    });

    it("turns an exception in the worker into a typed error", async () => {
      const err = await api.echo({ raiseError: "deliberate failure" }).catch((e) => e);
      expect(err).toBeInstanceOf(WorkerRequestError);
      expect(err.workerCode).toBe("DEBUG_RAISED");
      expect(err.message).toContain("deliberate failure");
      await expect(api.ping()).resolves.toHaveProperty("workerTimeS");
    });

    it("fails a request past its timeout and stays usable", async () => {
      const err = await api.echo({ sleepMs: 1500 }, { timeoutMs: 200 }).catch((e) => e);
      expect(err).toBeInstanceOf(RequestTimeoutError);
      await expect(api.ping()).resolves.toBeDefined();
    });

    it("gives 100 concurrent requests their own replies", async () => {
      const replies = await Promise.all(
        Array.from({ length: 100 }, (_, i) => api.echo({ batch: { x: Tensor.int64([i]) }, payload: new Uint8Array([i]), sleepMs: i % 7 })),
      );
      replies.forEach((r, i) => {
        expect(r.payload[0]).toBe(i);
        expect(Number((r.batch.x.data as BigInt64Array)[0])).toBe(i);
      });
    });

    it("answers malformed bytes with an error reply and keeps serving", async () => {
      // A second DEALER speaks to the same worker with garbage.
      const raw = new zmq.Dealer({ linger: 0 });
      raw.connect(client.endpoint);
      await raw.send(Buffer.from([0xff, 0xff, 0x00, 0x13, 0x37]));
      const reply = decodeReply(await raw.receive());
      expect(reply.kind).toBe("error");
      if (reply.kind === "error") expect(reply.error.code).toBe("MALFORMED_REQUEST");
      await raw.send(encodeRequest(9, "ping", {}));
      let pong;
      do pong = decodeReply(await raw.receive()); while (pong.kind === "heartbeat");
      expect(pong.kind).toBe("result");
      raw.close();
      await expect(api.ping()).resolves.toBeDefined();
    });
  });
}

describe("worker lifecycle", () => {
  it("fails pending requests within seconds when the worker is killed, and restarts", async () => {
    const client = await WorkerClient.spawn({ heartbeatIntervalMs: 200 });
    const api = new WorkerApi(client);
    const pending = [api.echo({ sleepMs: 10_000 }), api.echo({ sleepMs: 10_000 })];
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    process.kill(client.pid!, "SIGKILL");
    const errors = await Promise.all(pending.map((p) => p.catch((e) => e)));
    expect(Date.now() - t0).toBeLessThan(3_000);
    for (const e of errors) {
      expect(e).toBeInstanceOf(WorkerCrashedError);
      expect(e.message).toMatch(/SIGKILL/);
      expect(e.inFlight).toEqual(["echo", "echo"]);
    }
    expect(client.state).toBe("crashed");
    await expect(api.ping()).rejects.toBeInstanceOf(WorkerCrashedError);
    // a later call says why the worker died, not only that it did
    await expect(api.ping()).rejects.toThrow(/the worker crashed earlier \(.*SIGKILL.*\); restart it first/);
    const firstSocket = ipcPath(client.endpoint)!;
    await client.restart();
    expect(client.state).toBe("ready");
    expect(existsSync(firstSocket)).toBe(false); // the dead worker's socket file is gone
    await expect(api.ping()).resolves.toBeDefined();
    const socket = ipcPath(client.endpoint)!;
    expect(existsSync(socket)).toBe(true);
    await client.close();
    expect(client.state).toBe("closed");
    expect(existsSync(socket)).toBe(false);
    await expect(api.ping()).rejects.toBeInstanceOf(WorkerClosedError);
  });

  it("notices a hung worker by its missing heartbeats", async () => {
    const client = await WorkerClient.spawn({ heartbeatIntervalMs: 100, heartbeatTimeoutMs: 1_000 });
    const pending = new WorkerApi(client).echo({ sleepMs: 10_000 }).catch((e) => e);
    process.kill(client.pid!, "SIGSTOP");
    const t0 = Date.now();
    const err = await pending;
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect(err.message).toMatch(/no heartbeat/);
    expect(Date.now() - t0).toBeLessThan(3_000);
    await client.close();
  });

  it("refuses a protocol-version mismatch at handshake, naming both versions", async () => {
    const err = await WorkerClient.spawn({ protocolVersion: PROTOCOL_VERSION + 98 }).catch((e) => e);
    expect(err).toBeInstanceOf(ProtocolMismatchError);
    expect(err.message).toContain(`version ${PROTOCOL_VERSION + 98}`);
    expect(err.message).toContain(`version ${PROTOCOL_VERSION}`);
  });

  it("explains a missing Python interpreter", async () => {
    const err = await WorkerClient.spawn({ python: "/nonexistent/python3" }).catch((e) => e);
    expect(err).toBeInstanceOf(WorkerStartError);
    expect(err.message).toMatch(/not found.*setup:python|DPALIGN_PYTHON/);
  });

  it("stops the worker when the control plane dies", async () => {
    // A throwaway Node process spawns a worker, prints its pid, and is then killed.
    const script = `
      const { WorkerClient } = await import(${JSON.stringify(new URL("../../../dist/transport/client.js", import.meta.url).href)});
      const c = await WorkerClient.spawn({ heartbeatIntervalMs: 100 });
      console.log(c.pid);
      setInterval(() => {}, 1000);`;
    const parent = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    const workerPid = await new Promise<number>((resolve) => parent.stdout!.once("data", (d) => resolve(Number(String(d).trim()))));
    expect(workerPid).toBeGreaterThan(0);
    parent.kill("SIGKILL");
    const deadline = Date.now() + 5_000;
    let alive = true;
    while (alive && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      try {
        process.kill(workerPid, 0);
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  });
});
