/**
 * WorkerClient: the control plane's end of the worker protocol.
 *
 * It spawns a worker process (or connects to one started by hand), performs the handshake, sends
 * requests with per-request timeouts and matches replies by id, so any number may be in flight.
 * A worker that exits, or whose heartbeats stop, is noticed within seconds: every pending request
 * then fails with WorkerCrashedError naming what was in flight, and `restart()` brings up a fresh
 * one. Lifecycle is an explicit state machine: idle -> starting -> ready -> (crashed | closing ->
 * closed).
 *
 * It composes two parts that know nothing of each other: a ProcessSupervisor (supervisor.ts: the
 * worker process, its stderr, its exit, the ipc:// socket file) and an RpcChannel (channel.ts: the
 * DEALER socket, request ids, timeouts, heartbeats, the handshake).
 */
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ensurePythonEnv, projectRoot, resolvePython } from "../util/python.js";
import type { CallOptions, RpcCaller } from "../protocol/rpc.js";
import { RpcChannel, type ConnectionLog } from "./channel.js";
import { PROTOCOL_VERSION } from "./codec.js";
import { loadClientKeys, type CurveClientKeys } from "./curve.js";
import { freshIpcEndpoint, ipcPath } from "./endpoint.js";
import { ProtocolMismatchError, RequestTimeoutError, WorkerBusyError, WorkerClosedError, WorkerCrashedError, WorkerRequestError, WorkerStartError } from "./errors.js";
import type { HandshakeReply, Method, ReplyOf, RequestOf } from "../protocol/messages.js";
import { ProcessSupervisor, type ExitInfo } from "./supervisor.js";

export type WorkerState = "idle" | "starting" | "ready" | "crashed" | "closing" | "closed";

export interface WorkerClientOptions {
  /** Python interpreter for spawned workers (default: DPALIGN_PYTHON, the project's .venv, python3). */
  python?: string;
  /** Endpoint to bind the spawned worker on (default: a fresh ipc:// socket in the temp dir). */
  endpoint?: string;
  /** Default per-request timeout (default 10 minutes: training steps on a CPU can be long). */
  requestTimeoutMs?: number;
  /** Time allowed for the worker to start and answer the handshake (default 90 s). */
  startTimeoutMs?: number;
  /** Heartbeat interval asked of the worker (default 1000 ms). */
  heartbeatIntervalMs?: number;
  /** Silence after which the worker counts as dead (default max(5 s, 5 heartbeats)). */
  heartbeatTimeoutMs?: number;
  /** Concurrent request threads in the worker (default 4). */
  threads?: number;
  /** Extra environment for the worker process. */
  env?: Record<string, string>;
  /** Receives each line the worker writes to stderr (default: kept in a ring buffer only). */
  onStderr?: (line: string) => void;
  /** CurveZMQ keys for a worker that requires them (non-loopback tcp://); see transport/curve.ts. */
  curve?: CurveClientKeys;
  /** A keygen directory: a spawned worker gets `--keys DIR`, and the client its keys from there. */
  keysDir?: string;
  /** Protocol version announced at handshake; only tests of version checks set it. */
  protocolVersion?: number;
  /**
   * Silence after which the worker may serve another control plane instead of this one (default:
   * 60 s for connect(), where the client sends a keep-alive every second; 0 for spawn(): a spawned
   * worker is this process's alone). A worker refuses a second control plane while the first is
   * connected and not silent for this long.
   */
  sessionTimeoutMs?: number;
}

/** Connection-level failures during start-up that waiting longer cannot fix. */
const DEFINITIVE_OTHER_FAILURES = 3;
const KEEPALIVE_MS = 1_000;

const STDERR_LINES_KEPT = 40;

export class WorkerClient implements RpcCaller {
  private channel: RpcChannel | undefined;
  private worker: ProcessSupervisor | undefined;
  private _state: WorkerState = "idle";
  private _endpoint: string;
  private _handshake: HandshakeReply | undefined;
  private crashListeners: ((e: WorkerCrashedError) => void)[] = [];
  /** Why the worker last crashed, for calls made after it (a crash with nothing in flight reports to no one). */
  private lastCrash: WorkerCrashedError | undefined;
  private keepAlive: NodeJS.Timeout | undefined;
  /** Names this control plane to the worker, across reconnects and restarts (a worker serves one session at a time). */
  readonly sessionId = randomBytes(12).toString("hex");

  private constructor(private readonly opts: WorkerClientOptions, endpoint: string, private readonly spawned: boolean) {
    this._endpoint = endpoint;
  }

  /**
   * Spawns `python -m dpalign_worker` and completes the handshake. With `keysDir` the worker is
   * started with CurveZMQ keys from that directory (required for non-loopback tcp://).
   */
  static async spawn(opts: WorkerClientOptions = {}): Promise<WorkerClient> {
    const withKeys = opts.keysDir && !opts.curve ? { ...opts, curve: loadClientKeys(opts.keysDir) } : opts;
    const client = new WorkerClient(withKeys, opts.endpoint ?? freshIpcEndpoint(), true);
    await client.start();
    return client;
  }

  /** Connects to a worker already listening at `endpoint` (e.g. one started by `dpalign worker`). */
  static async connect(endpoint: string, opts: WorkerClientOptions = {}): Promise<WorkerClient> {
    const withKeys = opts.keysDir && !opts.curve ? { ...opts, curve: loadClientKeys(opts.keysDir) } : opts;
    const client = new WorkerClient(withKeys, endpoint, false);
    await client.start();
    return client;
  }

  get state(): WorkerState {
    return this._state;
  }

  get endpoint(): string {
    return this._endpoint;
  }

  /** The worker's handshake reply: versions, pid and capabilities. */
  get info(): HandshakeReply {
    if (!this._handshake) throw new WorkerClosedError();
    return this._handshake;
  }

  get pid(): number | undefined {
    return this.worker?.pid;
  }

  /** Methods in flight right now (for progress displays and crash messages). */
  inFlight(): string[] {
    return this.channel?.inFlight() ?? [];
  }

  onCrash(listener: (e: WorkerCrashedError) => void): void {
    this.crashListeners.push(listener);
  }

  async call<M extends Method>(method: M, request: RequestOf<M>, options: CallOptions = {}): Promise<ReplyOf<M>> {
    if (this._state !== "ready" || !this.channel) {
      if (this._state === "crashed") {
        throw new WorkerCrashedError(`the worker crashed earlier${this.lastCrash ? ` (${this.lastCrash.message.split("\n")[0]})` : ""}; restart it first`, []);
      }
      throw new WorkerClosedError();
    }
    return this.channel.request(method, request, options.timeoutMs ?? this.opts.requestTimeoutMs ?? 600_000);
  }

  /**
   * Stops a spawned worker (shutdown request, then SIGKILL if it lingers); a connected one is only
   * released (its session ends, its models are dropped) and keeps serving the next control plane.
   * Then closes the socket.
   */
  async close(): Promise<void> {
    if (this._state === "closed" || this._state === "closing") return;
    const wasReady = this._state === "ready";
    this._state = "closing";
    if (wasReady && this.channel) {
      try {
        await this.channel.request("shutdown", { reason: "client closed", endSession: !this.spawned }, 5_000);
      } catch {
        // A worker that cannot answer is killed below.
      }
    }
    await this.teardown(5_000, new WorkerClosedError());
    this._state = "closed";
  }

  /** Brings up a fresh worker after a crash (or replaces a live one) with the same options. */
  async restart(): Promise<void> {
    if (this._state === "closing" || this._state === "closed") throw new WorkerClosedError();
    const restarted = new WorkerCrashedError("the worker was restarted while these requests were in flight", this.inFlight());
    if (this._state === "ready") this._state = "closing";
    await this.teardown(this._state === "closing" ? 2_000 : 0, restarted);
    if (this.spawned && !this.opts.endpoint) this._endpoint = freshIpcEndpoint();
    this._state = "idle";
    await this.start();
  }

  // ---------------------------------------------------------------------------------------------
  private async start(): Promise<void> {
    this._state = "starting";
    let startFailure: ((e: Error) => void) | undefined;
    const failedToStart = new Promise<never>((_, reject) => (startFailure = reject));
    failedToStart.catch(() => undefined);
    if (this.spawned) {
      const worker = this.spawnWorker();
      this.worker = worker;
      worker.onExit((info) => {
        if (this.worker !== worker) return;
        if (this._state === "starting") startFailure?.(this.startError(info));
        else if (this._state === "ready") this.crash(`the worker process (pid ${worker.pid}) ${describeExit(info)}`);
      });
    }
    const remote = !this.spawned;
    const channel = new RpcChannel(this._endpoint, { curve: this.opts.curve, onLog: this.opts.onStderr, routingId: this.sessionId, observeConnection: remote });
    this.channel = channel;
    if (remote) {
      channel.onConnectionEvent((log) => {
        const why = definitiveConnectFailure(log, this.opts.curve !== undefined);
        if (why) startFailure?.(new WorkerStartError(this.connectFailureMessage(why, log)));
      });
    }
    const startTimeout = this.opts.startTimeoutMs ?? 90_000;
    const sessionTimeoutMs = this.opts.sessionTimeoutMs ?? (remote ? 60_000 : 0);
    try {
      this._handshake = await Promise.race([
        channel.handshake({
          protocolVersion: this.opts.protocolVersion ?? PROTOCOL_VERSION,
          client: `dpalign-ts/0.1.0 pid ${process.pid}`,
          heartbeatIntervalMs: this.opts.heartbeatIntervalMs ?? 1000,
          sessionId: this.sessionId,
          sessionTimeoutMs,
        }, startTimeout),
        failedToStart,
      ]);
    } catch (e) {
      await this.teardown(1_000);
      this._state = "closed";
      if (e instanceof RequestTimeoutError) {
        if (remote) throw new WorkerStartError(this.connectFailureMessage(undefined, channel.connection, startTimeout));
        const keysHint = this.opts.curve ? " (if the worker uses CurveZMQ, check that its authorized_keys lists this client's key and worker.pub matches)" : "";
        throw new WorkerStartError(`no handshake from the worker at ${this._endpoint} within ${startTimeout} ms${keysHint}${this.stderrHint()}`);
      }
      if (e instanceof WorkerRequestError && e.workerCode === "WORKER_BUSY") throw new WorkerBusyError(`${this._endpoint}: ${e.message.replace(/^worker handshake: /, "")}`);
      if (remote && e instanceof ProtocolMismatchError) throw new ProtocolMismatchError(`the worker at ${this._endpoint}: ${e.message}`);
      throw e;
    }
    startFailure = undefined;
    this._state = "ready";
    if (remote && sessionTimeoutMs > 0) {
      this.keepAlive = setInterval(() => channel.sendKeepAlive(), Math.min(KEEPALIVE_MS, sessionTimeoutMs / 4));
      this.keepAlive.unref();
    }
    const hbTimeout = this.opts.heartbeatTimeoutMs ?? Math.max(5_000, 5 * this._handshake.heartbeatIntervalMs);
    channel.watchHeartbeats(hbTimeout, (silentMs) => {
      if (this.channel === channel) this.crash(`no heartbeat from the worker for ${silentMs} ms (limit ${hbTimeout} ms)`);
    });
  }

  /** Starts `python -m dpalign_worker` on this client's endpoint, told to die with this process. */
  private spawnWorker(): ProcessSupervisor {
    if (!this.opts.python) ensurePythonEnv();
    const python = this.opts.python ?? resolvePython();
    const pyPath = [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":");
    const args = ["-m", "dpalign_worker", "--endpoint", this._endpoint, "--parent-pid", String(process.pid), "--threads", String(this.opts.threads ?? 4)];
    if (this.opts.keysDir) args.push("--keys", this.opts.keysDir);
    return ProcessSupervisor.start({
      command: python,
      args,
      env: { ...process.env, PYTHONPATH: pyPath, PYTHONUNBUFFERED: "1", ...this.opts.env },
      stderrLines: STDERR_LINES_KEPT,
      onStderr: this.opts.onStderr,
      cleanupFile: ipcPath(this._endpoint),
    });
  }

  private startError(info: ExitInfo): WorkerStartError {
    const python = this.opts.python ?? resolvePython();
    const err = info.spawnError;
    if (err?.code === "ENOENT") {
      return new WorkerStartError(`cannot start the worker: Python interpreter ${JSON.stringify(python)} not found. Run \`npm run setup:python\` or set DPALIGN_PYTHON`);
    }
    if (err) return new WorkerStartError(`cannot start the worker with ${python}: ${err.message}`);
    return new WorkerStartError(`the worker process ${describeExit(info)} during start-up${this.stderrHint()}`);
  }

  /**
   * Why a worker started by hand could not be reached, from what the socket saw: `why` is a
   * definitive failure, or undefined after `timeoutMs` without a handshake. Names the flags to fix.
   */
  private connectFailureMessage(why: ConnectFailure | undefined, log: Readonly<ConnectionLog>, timeoutMs?: number): string {
    const ep = this._endpoint;
    const keys = this.opts.keysDir ?? "the --worker-keys directory";
    switch (why ?? (log.connected === 0 ? (log.retries > 0 ? "refused" : "unreachable") : log.handshakes === 0 ? "no-zmtp" : "silent")) {
      case "auth":
        return `the worker at ${ep} refused this control plane's CurveZMQ key: the authorized_keys file in the worker's --keys directory does not list the public key of ${join(keys, "client.key")}. Copy authorized_keys from the same \`dpalign worker keygen\` directory to the worker's --keys directory (or append this key) and restart the worker`;
      case "needs-keys":
        return `the worker at ${ep} requires CurveZMQ: pass --worker-keys DIR, the \`dpalign worker keygen\` directory holding worker.pub and client.key`;
      case "no-curve":
        return `the worker at ${ep} does not use CurveZMQ, but --worker-keys was given: start the worker with --keys DIR (needed for any non-loopback address), or leave --worker-keys out for a loopback worker`;
      case "server-key":
        return `the CurveZMQ handshake with the worker at ${ep} failed (${log.otherFailures[0]}): worker.pub in ${keys} is not the public key of the worker listening there. Use the keygen directory whose worker.key the worker was started with (--keys)`;
      case "refused":
        return `nothing accepts connections at ${ep} (connection refused, retried for ${((timeoutMs ?? 0) / 1000).toFixed(0)} s): start a worker there with \`dpalign worker --endpoint tcp://0.0.0.0:PORT --keys DIR\`, and check the host and port of --worker-endpoint`;
      case "unreachable":
        return `cannot reach ${ep} within ${((timeoutMs ?? 0) / 1000).toFixed(0)} s (no connection: wrong host, a firewall, or the machine is down); check --worker-endpoint, or raise --worker-timeout`;
      case "no-zmtp":
        return `connected to ${ep}, but what listens there did not complete a ZeroMQ handshake within ${((timeoutMs ?? 0) / 1000).toFixed(0)} s: is it a dpalign worker? Check the port of --worker-endpoint`;
      default:
        return `the worker at ${ep} accepted the connection but did not answer the handshake within ${((timeoutMs ?? 0) / 1000).toFixed(0)} s (busy starting, or hung); raise --worker-timeout or restart the worker`;
    }
  }

  private stderrHint(): string {
    return this.worker?.stderrHint(8) ?? "";
  }

  private crash(why: string): void {
    if (this._state !== "ready") return;
    this._state = "crashed";
    const inFlight = this.inFlight();
    const err = new WorkerCrashedError(
      `${why}; ${inFlight.length ? `requests in flight: ${inFlight.join(", ")}` : "no request was in flight"}${this.stderrHint()}\n` +
        "Restart the worker (the run can be resumed from its last checkpoint).",
      inFlight,
    );
    this.lastCrash = err;
    void this.teardown(0, err);
    for (const l of this.crashListeners) l(err);
  }

  /**
   * Closes the channel (pending requests fail with `err`), then stops the worker: up to `graceMs`
   * to exit on its own, then SIGKILL; the ipc:// socket file goes with it.
   */
  private async teardown(graceMs: number, err: Error = new WorkerClosedError()): Promise<void> {
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    this.channel?.close(err);
    await this.worker?.stop(graceMs);
  }
}

type ConnectFailure = "auth" | "needs-keys" | "no-curve" | "server-key";

function definitiveConnectFailure(log: Readonly<ConnectionLog>, hasKeys?: boolean): ConnectFailure | undefined {
  if (log.authFailures > 0) return "auth";
  if (log.protocolFailures.some((c) => /MECHANISM_MISMATCH/.test(c))) return hasKeys ? "no-curve" : "needs-keys";
  if (hasKeys && log.otherFailures.length >= DEFINITIVE_OTHER_FAILURES) return "server-key";
  return undefined;
}

function describeExit(info: ExitInfo): string {
  return info.signal ? `was killed by ${info.signal}` : `exited with code ${info.code}`;
}
