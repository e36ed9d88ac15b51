/**
 * Workers started by hand (`dpalign worker --endpoint tcp://HOST:PORT --keys DIR`, typically on
 * other machines), reached from the CLI with `--worker-endpoint` and `--worker-keys`.
 *
 * The control plane passes workers absolute local paths (checkpoints, the model cache,
 * tokenizers), so a remote worker must see the run directory and the cache at the same paths:
 * a shared filesystem. `connectWorkers` checks that at connection time with probe files, so a run
 * fails at once with a message that says so, instead of at its first checkpoint.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { WorkerClient, type WorkerClientOptions } from "../transport/client.js";
import { isLoopbackEndpoint } from "../transport/curve.js";
import { WorkerRequestError, WorkerStartError } from "../transport/errors.js";
import { DpalignError, InvalidArgumentError } from "../util/errors.js";
import { WorkerApi } from "./api.js";
import { WorkerGroup, type Workers } from "./group.js";

/** A directory both the control plane and the workers use, and what it is (for messages). */
export interface SharedDir {
  dir: string;
  what: string;
}

export interface ConnectOptions extends Omit<WorkerClientOptions, "keysDir" | "curve" | "endpoint" | "python" | "threads" | "env"> {
  /** Directories each worker must see at the same path (checked with probe files; default none). */
  sharedDirs?: readonly SharedDir[];
}

/** The worker does not see the control plane's files at the same paths. */
export class SharedFilesystemError extends DpalignError {
  constructor(message: string) {
    super("WORKER_FILESYSTEM", message);
  }
}

/** The prefix of probe files; the worker reads and writes no other file through probe_path. */
export const PROBE_PREFIX = ".dpalign-probe-";

const ENDPOINT = /^(tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}|ipc:\/\/\S+)$/;

/** Checks --worker-endpoint values and --worker-keys before anything connects. */
export function checkEndpoints(endpoints: readonly string[], keysDir: string | undefined): void {
  for (const ep of endpoints) {
    if (!ENDPOINT.test(ep)) throw new InvalidArgumentError("--worker-endpoint", `${JSON.stringify(ep)} is not tcp://HOST:PORT (or ipc:///path.sock for a worker on this machine)`);
    if (!keysDir && !isLoopbackEndpoint(ep)) {
      throw new InvalidArgumentError(
        "--worker-keys",
        `a worker at ${ep} (not a loopback address) uses CurveZMQ: pass --worker-keys DIR, the \`dpalign worker keygen\` directory holding worker.pub and client.key`,
      );
    }
  }
  const dup = endpoints.find((ep, i) => endpoints.indexOf(ep) !== i);
  if (dup) throw new InvalidArgumentError("--worker-endpoint", `${dup} is given twice; a worker serves one control plane (and one rank) at a time`);
}

/**
 * Connects to workers started by hand, in parallel: handshake (protocol version, one session per
 * worker: a busy worker is refused with WorkerBusyError), then the shared-filesystem check of
 * `sharedDirs`. All or nothing: on any failure the ones already connected are released and the
 * first error (in endpoint order) is thrown. The clients are in the order of `endpoints`; closing
 * one releases its worker for the next control plane without stopping it.
 */
export async function connectWorkers(endpoints: readonly string[], keysDir: string | undefined, opts: ConnectOptions = {}): Promise<WorkerClient[]> {
  checkEndpoints(endpoints, keysDir);
  const { sharedDirs = [], ...clientOpts } = opts;
  const settled = await Promise.allSettled(
    endpoints.map(async (ep) => {
      const client = await WorkerClient.connect(ep, { ...clientOpts, keysDir });
      try {
        await checkSharedFilesystem(client, sharedDirs);
      } catch (e) {
        await client.close();
        throw e;
      }
      return client;
    }),
  );
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.all(settled.map((r) => (r.status === "fulfilled" ? r.value.close() : undefined)));
    throw failed.reason;
  }
  return settled.map((r) => (r as PromiseFulfilledResult<WorkerClient>).value);
}

/**
 * Checks that the worker behind `client` sees each directory as this process does: this process
 * writes a random token into a probe file there, the worker reads it back and writes a token of
 * its own, which this process reads back. Throws SharedFilesystemError naming the directory, the
 * worker's host and the fix. The probe files are removed.
 */
export async function checkSharedFilesystem(client: WorkerClient, dirs: readonly SharedDir[]): Promise<void> {
  const ep = client.endpoint;
  for (const { dir: given, what } of dirs) {
    const dir = resolve(given);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, `${PROBE_PREFIX}${randomBytes(8).toString("hex")}`);
    const answerPath = `${path}.worker`;
    const token = randomBytes(16);
    const answer = randomBytes(16);
    writeFileSync(path, token, { mode: 0o600 });
    try {
      let r;
      try {
        r = await client.call("probePath", { path, expected: token, answerPath, answer }, { timeoutMs: 30_000 });
      } catch (e) {
        if (e instanceof WorkerRequestError && e.workerCode === "UNKNOWN_METHOD") {
          throw new WorkerStartError(`the worker at ${ep} cannot check the shared filesystem: it is an older dpalign_worker. Install the same dpalign version on both machines`);
        }
        throw e;
      }
      const host = r.hostname || "the worker's machine";
      const fix =
        `Remote workers need the ${what} on a filesystem both machines share, mounted at the same path (README: "Remote workers"): ` +
        `mount it at ${dir} on ${host}, or pass a shared directory (--run-dir/--root, --cache-dir)`;
      if (!r.found) throw new SharedFilesystemError(`the worker at ${ep} (${host}) does not see the ${what} ${dir}: it cannot open the probe file this control plane just wrote there (${r.error}). ${fix}`);
      if (!r.matches) throw new SharedFilesystemError(`the worker at ${ep} (${host}) sees another file at ${path}: the ${what} ${dir} is a different directory there. ${fix}`);
      if (!r.answered) throw new SharedFilesystemError(`the worker at ${ep} (${host}) cannot write to the ${what} ${dir} (${r.answerError}); it writes checkpoints and models there: make it writable for the worker's user`);
      let back: Buffer | undefined;
      try {
        back = readFileSync(answerPath);
      } catch {
        back = undefined;
      }
      if (!back?.equals(answer)) throw new SharedFilesystemError(`the worker at ${ep} (${host}) wrote a probe file into the ${what} ${dir} that this control plane cannot read back. ${fix}`);
    } finally {
      rmSync(path, { force: true });
      rmSync(answerPath, { force: true });
    }
  }
}

/** The CLI's --worker-endpoint / --worker-keys / --worker-timeout / --worker-rendezvous, as yargs parsed them. */
export interface RemoteWorkerFlags {
  workerEndpoint?: string[];
  workerKeys?: string;
  workerTimeout?: number;
  workerRendezvous?: string;
}

/** The remote workers of a pipeline command (one WorkerClient, or a WorkerGroup over several), and how to let them go. */
export interface RemoteWorkers {
  api: WorkerApi;
  workers: Workers;
  /** One line for the console: which workers, and the process group. */
  description: string;
  /** Ends the sessions: the workers drop this run's models and keep serving. */
  close(): Promise<void>;
}

/**
 * Where the ranks of several remote workers meet (torch.distributed's TCPStore, served by rank 0):
 * --worker-rendezvous HOST:PORT, else the first endpoint's host and its port + 1.
 */
export function rendezvousOf(flag: string | undefined, firstEndpoint: string): { masterAddr: string; masterPort: number } {
  if (flag !== undefined) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(flag);
    const port = Number(m?.[2]);
    if (!m || !(port > 0 && port < 65536)) throw new InvalidArgumentError("--worker-rendezvous", `${JSON.stringify(flag)} is not HOST:PORT (the first worker's address as the other workers reach it, and a free port there)`);
    return { masterAddr: m[1].replace(/^\[|\]$/g, ""), masterPort: port };
  }
  const m = /^tcp:\/\/\[?([^\]]+?)\]?:(\d+)$/.exec(firstEndpoint);
  if (!m) throw new InvalidArgumentError("--worker-rendezvous", `several workers need a rendezvous HOST:PORT that every worker reaches; ${firstEndpoint} is not tcp://`);
  const port = Number(m[2]) + 1;
  if (port >= 65536) throw new InvalidArgumentError("--worker-rendezvous", `the default (port ${m[2]} + 1) is not a port: pass HOST:PORT`);
  return { masterAddr: m[1], masterPort: port };
}

/**
 * The remote workers a pipeline command was pointed at, connected and checked; undefined without
 * --worker-endpoint (the command spawns its own). Several endpoints are the ranks of one
 * data-parallel WorkerGroup, in the order given (the first is rank 0). `configWorkers` (the
 * config's `workers`, local workers) must then be 1.
 */
export async function openRemoteWorkers(flags: RemoteWorkerFlags, sharedDirs: readonly SharedDir[], configWorkers = 1): Promise<RemoteWorkers | undefined> {
  const endpoints = flags.workerEndpoint ?? [];
  if (endpoints.length === 0) {
    if (flags.workerKeys) throw new InvalidArgumentError("--worker-keys", "is for workers started by hand: give their addresses with --worker-endpoint tcp://HOST:PORT");
    if (flags.workerRendezvous) throw new InvalidArgumentError("--worker-rendezvous", "is for several workers started by hand (--worker-endpoint, repeated)");
    return undefined;
  }
  checkEndpoints(endpoints, flags.workerKeys);
  if (configWorkers > 1) {
    throw new InvalidArgumentError(
      "--worker-endpoint",
      `workers = ${configWorkers} (--workers or the config) asks for local workers, --worker-endpoint for workers started by hand: with remote workers each --worker-endpoint is one rank; drop --workers (or set workers: 1)`,
    );
  }
  const timeoutS = flags.workerTimeout ?? 30;
  if (!(timeoutS > 0)) throw new InvalidArgumentError("--worker-timeout", "must be a positive number of seconds");
  const rendezvous = endpoints.length > 1 ? rendezvousOf(flags.workerRendezvous, endpoints[0]) : undefined;
  const clients = await connectWorkers(endpoints, flags.workerKeys, { startTimeoutMs: timeoutS * 1000, sharedDirs });
  const where = clients.map((c) => `${c.endpoint} (${c.info.hostname}, ${c.info.capabilities.device})`).join(", ");
  if (!rendezvous) return { api: new WorkerApi(clients[0]), workers: clients[0], description: `worker started by hand: ${where}`, close: () => clients[0].close() };
  try {
    const cuda = clients.map((c) => c.info.capabilities.device.startsWith("cuda"));
    if (cuda.some((x) => x !== cuda[0])) {
      throw new InvalidArgumentError("--worker-endpoint", `the workers' devices differ (${clients.map((c) => `${c.endpoint}: ${c.info.capabilities.device}`).join(", ")}): the ranks of one group all use CUDA (nccl) or all the CPU (gloo)`);
    }
    const backend = cuda[0] ? "nccl" : "gloo";
    const group = await WorkerGroup.fromClients(clients, { ...rendezvous, backend });
    return {
      api: new WorkerApi(group), workers: group, close: () => group.close(),
      description: `${clients.length} workers started by hand in one process group (${backend}, rendezvous ${rendezvous.masterAddr}:${rendezvous.masterPort}): ${where}; each batch is split over them, the noise added once`,
    };
  } catch (e) {
    await Promise.all(clients.map((c) => c.close()));
    throw e;
  }
}
