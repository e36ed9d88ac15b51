/**
 * `npm run bench:rpc`: round-trip latency (p50, p99) of an empty request and throughput of a
 * 64 MiB tensor echo, over ipc and tcp loopback, measured side by side in one run.
 */
import { performance } from "node:perf_hooks";
import { WorkerClient } from "../transport/client.js";
import { Tensor } from "../transport/tensor.js";
import { WorkerApi } from "../worker/api.js";

const LATENCY_CALLS = Number(process.env.BENCH_RPC_CALLS ?? 2000);
const BIG_MIB = 64;
const BIG_REPEATS = Number(process.env.BENCH_RPC_BIG_REPEATS ?? 5);

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function latency(call: () => Promise<unknown>): Promise<{ p50: number; p99: number; mean: number }> {
  for (let i = 0; i < 50; i++) await call(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < LATENCY_CALLS; i++) {
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: quantile(times, 0.5), p99: quantile(times, 0.99), mean: times.reduce((a, b) => a + b, 0) / times.length };
}

async function bench(name: string, endpoint: string | undefined) {
  const client = await WorkerClient.spawn({ endpoint });
  const api = new WorkerApi(client);
  try {
    const ping = await latency(() => api.ping());
    const echo = await latency(() => api.echo({}));
    const big = new Tensor("float32", [BIG_MIB * 1024 * 256], new Float32Array(BIG_MIB * 1024 * 256).fill(1.5));
    await api.echo({ batch: { big } });
    const t0 = performance.now();
    for (let i = 0; i < BIG_REPEATS; i++) {
      const r = await api.echo({ batch: { big } });
      if (r.batch.big.size !== big.size) throw new Error("echo returned a different tensor");
    }
    const seconds = (performance.now() - t0) / 1000;
    // Each echo moves the tensor twice (there and back).
    const mibPerS = (2 * BIG_MIB * BIG_REPEATS) / seconds;
    return { transport: name, ping, echo_empty: echo, echo_64mib_ms: (seconds * 1000) / BIG_REPEATS, throughput_mib_s: mibPerS };
  } finally {
    await client.close();
  }
}

const results = [await bench("ipc", undefined), await bench("tcp", `tcp://127.0.0.1:${35_000 + (process.pid % 1000)}`)];
const f = (x: number) => x.toFixed(3);
console.log(`dpalign bench:rpc — ${LATENCY_CALLS} sequential calls per latency figure, ${BIG_REPEATS} echoes of a ${BIG_MIB} MiB float32 tensor`);
console.log("transport | ping p50 ms | ping p99 ms | empty echo p50 ms | empty echo p99 ms | 64 MiB echo ms | throughput MiB/s (both ways)");
console.log("---|---|---|---|---|---|---");
for (const r of results) {
  console.log(`${r.transport} | ${f(r.ping.p50)} | ${f(r.ping.p99)} | ${f(r.echo_empty.p50)} | ${f(r.echo_empty.p99)} | ${r.echo_64mib_ms.toFixed(1)} | ${r.throughput_mib_s.toFixed(0)}`);
}
console.log("\nping is answered on the worker's I/O thread; echo goes through its request thread pool.");
if (process.argv.includes("--json")) console.log(JSON.stringify(results, null, 2));
