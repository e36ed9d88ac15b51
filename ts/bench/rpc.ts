/**
 * `npm run bench:rpc`: the worker protocol against a raw reference, side by side in one run, over
 * ipc and tcp loopback:
 *   - round-trip latency (p50, p99) of an empty request: ping (answered on the worker's I/O
 *     thread) and an empty echo (through its request thread pool), and a one-frame message
 *     through the raw reference;
 *   - a 64 MiB float32 tensor echo, in MB/s each way (64 MiB there and back: 2 x 64 MiB over the
 *     round trip), through the worker (protobuf envelope, tensor in its own frame, torch on the
 *     far side) and as the same 64 MiB bytes through the raw reference.
 * The raw reference is a plain zeromq.js DEALER talking to a bare pyzmq ROUTER that returns every
 * message as it came (python -m dpalign_worker.bench.echo): the ceiling on this machine.
 * Big echoes alternate worker / raw so that both see the same machine load; the median is shown.
 *
 *   npm run bench:rpc [-- --json]     BENCH_RPC_CALLS (default 2000), BENCH_RPC_BIG_REPEATS (default 7)
 */
import { createServer } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import * as zmq from "zeromq";
import { WorkerClient } from "../transport/client.js";
import { freshIpcEndpoint, ipcPath } from "../transport/endpoint.js";
import { ProcessSupervisor } from "../transport/supervisor.js";
import { Tensor } from "../protocol/tensor.js";
import { ensurePythonEnv, projectRoot, resolvePython } from "../util/python.js";
import { WorkerApi } from "../worker/api.js";

const LATENCY_CALLS = Number(process.env.BENCH_RPC_CALLS ?? 2000);
const BIG_MIB = 64;
const BIG_BYTES = BIG_MIB * 1024 * 1024;
const BIG_REPEATS = Number(process.env.BENCH_RPC_BIG_REPEATS ?? 7);
const GOAL_P50_MS = 0.3;
const GOAL_MB_S = 1000;

interface Latency { p50: number; p99: number }
interface Row {
  transport: string;
  ping: Latency;
  echoEmpty: Latency;
  rawEmpty: Latency;
  echoBigMs: number;
  rawBigMs: number;
  echoMBs: number;
  rawMBs: number;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const median = (xs: number[]) => quantile([...xs].sort((a, b) => a - b), 0.5);

/** MB/s (10^6 bytes) each way of an echo of BIG_BYTES that took `ms` there and back. */
const eachWay = (ms: number) => (2 * BIG_BYTES) / 1e6 / (ms / 1000);

async function latency(call: () => Promise<unknown>): Promise<Latency> {
  for (let i = 0; i < 100; i++) await call(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < LATENCY_CALLS; i++) {
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99) };
}

async function time(call: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await call();
  return performance.now() - t0;
}

/** A free tcp port on the loopback (the OS picks it; it is released just before use). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** The raw reference: a pyzmq ROUTER echo process and a zeromq.js DEALER connected to it. */
async function startRawEcho(endpoint: string) {
  ensurePythonEnv();
  const proc = ProcessSupervisor.start({
    command: resolvePython(),
    args: ["-m", "dpalign_worker.bench.echo", "--endpoint", endpoint, "--parent-pid", String(process.pid)],
    env: { ...process.env, PYTHONPATH: [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":") },
    cleanupFile: ipcPath(endpoint),
  });
  const deadline = Date.now() + 60_000;
  while (!proc.stderrTail().some((l) => l.startsWith("echo listening"))) {
    if (!proc.running || Date.now() > deadline) throw new Error(`the raw echo did not start${proc.stderrHint()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const dealer = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0 });
  dealer.connect(endpoint);
  return {
    async echo(frames: Uint8Array[]): Promise<Buffer[]> {
      await dealer.send(frames);
      return dealer.receive();
    },
    async close() {
      dealer.close();
      await proc.stop(0);
    },
  };
}

async function bench(transport: string, workerEndpoint: string, rawEndpoint: string): Promise<Row> {
  const client = await WorkerClient.spawn({ endpoint: workerEndpoint });
  const raw = await startRawEcho(rawEndpoint);
  const api = new WorkerApi(client);
  try {
    const ping = await latency(() => api.ping());
    const echoEmpty = await latency(() => api.echo({}));
    const tiny = new Uint8Array([8, 1]); // a request envelope's size: id and an empty method field
    const rawEmpty = await latency(() => raw.echo([tiny]));

    const values = new Float32Array(BIG_BYTES / 4).fill(1.5);
    const big = new Tensor("float32", [values.length], values);
    const bytes = big.bytes();
    const ours = async () => {
      const r = await api.echo({ batch: { big } });
      if (r.batch.big.size !== big.size) throw new Error("the worker's echo returned a different tensor");
    };
    const theirs = async () => {
      const r = await raw.echo([bytes]);
      if (r[0].length !== BIG_BYTES) throw new Error("the raw echo returned a different message");
    };
    await ours();
    await theirs(); // warm-up: first-touch page faults, allocator growth
    const oursMs: number[] = [];
    const rawMs: number[] = [];
    for (let i = 0; i < BIG_REPEATS; i++) {
      oursMs.push(await time(ours));
      rawMs.push(await time(theirs));
    }
    const echoBigMs = median(oursMs);
    const rawBigMs = median(rawMs);
    return { transport, ping, echoEmpty, rawEmpty, echoBigMs, rawBigMs, echoMBs: eachWay(echoBigMs), rawMBs: eachWay(rawBigMs) };
  } finally {
    await raw.close();
    await client.close();
  }
}

const rows = [
  await bench("ipc", freshIpcEndpoint(), freshIpcEndpoint()),
  await bench("tcp", `tcp://127.0.0.1:${await freePort()}`, `tcp://127.0.0.1:${await freePort()}`),
];

const f = (x: number) => x.toFixed(3);
console.log(
  `dpalign bench:rpc — ${LATENCY_CALLS} sequential calls per latency figure; ${BIG_MIB} MiB float32 echo, ` +
    `median of ${BIG_REPEATS}, worker and raw reference alternating; MB = 10^6 bytes`,
);
console.log("\nEmpty round trip (ms)");
console.log("transport | ping p50 | ping p99 | empty echo p50 | empty echo p99 | raw reference p50 | raw reference p99");
console.log("---|---|---|---|---|---|---");
for (const r of rows) {
  console.log(`${r.transport} | ${f(r.ping.p50)} | ${f(r.ping.p99)} | ${f(r.echoEmpty.p50)} | ${f(r.echoEmpty.p99)} | ${f(r.rawEmpty.p50)} | ${f(r.rawEmpty.p99)}`);
}
console.log(`\n${BIG_MIB} MiB echo`);
console.log("transport | worker ms | worker MB/s each way | raw reference ms | raw reference MB/s each way | worker / raw");
console.log("---|---|---|---|---|---");
for (const r of rows) {
  console.log(`${r.transport} | ${r.echoBigMs.toFixed(1)} | ${r.echoMBs.toFixed(0)} | ${r.rawBigMs.toFixed(1)} | ${r.rawMBs.toFixed(0)} | ${(r.echoMBs / r.rawMBs).toFixed(2)}`);
}
const ipc = rows[0];
const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
console.log(
  `\nGoals over ipc: empty round trip p50 <= ${GOAL_P50_MS} ms: ${verdict(ipc.ping.p50 <= GOAL_P50_MS)} for ping (${f(ipc.ping.p50)}), ` +
    `${verdict(ipc.echoEmpty.p50 <= GOAL_P50_MS)} for echo (${f(ipc.echoEmpty.p50)}); ` +
    `64 MiB echo >= ${GOAL_MB_S} MB/s each way: ${verdict(ipc.echoMBs >= GOAL_MB_S)} (${ipc.echoMBs.toFixed(0)}; the raw ceiling here is ${ipc.rawMBs.toFixed(0)}` +
    `${ipc.rawMBs < GOAL_MB_S ? ", below the goal on this machine" : ""}).`,
);
if (process.argv.includes("--json")) console.log(JSON.stringify(rows, null, 2));
