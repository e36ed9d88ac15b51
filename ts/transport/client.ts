/**
 * WorkerClient: the control plane's end of the worker protocol (ZeroMQ DEALER).
 *
 * It spawns a worker process (or connects to one started by hand), performs the handshake, sends
 * requests with per-request timeouts and matches replies by id, so any number may be in flight.
 * A worker that exits, or whose heartbeats stop, is noticed within seconds: every pending request
 * then fails with WorkerCrashedError naming what was in flight, and `restart()` brings up a fresh
 * one. Lifecycle is an explicit state machine: idle -> starting -> ready -> (crashed | closing ->
 * closed).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import * as zmq from "zeromq";
import { ensurePythonEnv, projectRoot, resolvePython } from "../util/python.js";
import type { CallOptions, RpcCaller } from "../worker/api.js";
import { decodeReply, encodeRequest, PROTOCOL_VERSION } from "./codec.js";
import { loadClientKeys, type CurveClientKeys } from "./curve.js";
import { freshIpcEndpoint, ipcPath } from "./endpoint.js";
import {
  ProtocolMismatchError,
  RequestTimeoutError,
  WorkerClosedError,
  WorkerCrashedError,
  WorkerRequestError,
  WorkerStartError,
} from "./errors.js";
import type { HandshakeReply, Method, ReplyOf, RequestOf } from "./messages.js";

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
}

interface Pending {
  method: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const STDERR_LINES_KEPT = 40;

export class WorkerClient implements RpcCaller {
  private socket: zmq.Dealer | undefined;
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private sendChain: Promise<void> = Promise.resolve();
  private lastSeen = 0;
  private watchdog: NodeJS.Timeout | undefined;
  private stderrTail: string[] = [];
  private _state: WorkerState = "idle";
  private _endpoint: string;
  private _handshake: HandshakeReply | undefined;
  private crashListeners: ((e: WorkerCrashedError) => void)[] = [];

  private constructor(private readonly opts: WorkerClientOptions, endpoint: string, private readonly spawned: boolean) {
    this._endpoint = endpoint;
    // A process that exits without closing the client (a second Ctrl-C) still removes its socket file.
    if (spawned) process.once("exit", this.removeSocketFile);
  }

  private readonly removeSocketFile = () => {
    const path = ipcPath(this._endpoint);
    if (path) rmSync(path, { force: true });
  };

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
    return this.child?.pid;
  }

  /** Methods in flight right now (for progress displays and crash messages). */
  inFlight(): string[] {
    return [...this.pending.values()].map((p) => p.method);
  }

  onCrash(listener: (e: WorkerCrashedError) => void): void {
    this.crashListeners.push(listener);
  }

  async call<M extends Method>(method: M, request: RequestOf<M>, options: CallOptions = {}): Promise<ReplyOf<M>> {
    if (this._state !== "ready") {
      if (this._state === "crashed") throw new WorkerCrashedError(`the worker has crashed; call restart() first`, []);
      throw new WorkerClosedError();
    }
    return this.request(method, request, options.timeoutMs ?? this.opts.requestTimeoutMs ?? 600_000) as Promise<ReplyOf<M>>;
  }

  /** Stops the worker (shutdown request, then SIGKILL if it lingers) and closes the socket. */
  async close(): Promise<void> {
    if (this._state === "closed" || this._state === "closing") return;
    const wasReady = this._state === "ready";
    this._state = "closing";
    if (wasReady) {
      try {
        await this.request("shutdown", { reason: "client closed" }, 5_000);
      } catch {
        // A worker that cannot answer is killed below.
      }
    }
    await this.teardown(5_000);
    process.removeListener("exit", this.removeSocketFile);
    this.failAll(new WorkerClosedError());
    this._state = "closed";
  }

  /** Brings up a fresh worker after a crash (or replaces a live one) with the same options. */
  async restart(): Promise<void> {
    if (this._state === "closing" || this._state === "closed") throw new WorkerClosedError();
    if (this._state === "ready") {
      this._state = "closing";
      await this.teardown(2_000);
    }
    this.failAll(new WorkerCrashedError("the worker was restarted while these requests were in flight", this.inFlight()));
    if (this.spawned && !this.opts.endpoint) this._endpoint = freshIpcEndpoint();
    this._state = "idle";
    await this.start();
  }

  // ---------------------------------------------------------------------------------------------
  private async start(): Promise<void> {
    this._state = "starting";
    this.stderrTail = [];
    const socket = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0 });
    if (this.opts.curve) {
      socket.curveServerKey = this.opts.curve.serverPublicKey;
      socket.curvePublicKey = this.opts.curve.publicKey;
      socket.curveSecretKey = this.opts.curve.secretKey;
    }
    this.socket = socket;
    let startFailure: ((e: Error) => void) | undefined;
    const failedToStart = new Promise<never>((_, reject) => (startFailure = reject));
    failedToStart.catch(() => undefined);
    if (this.spawned) this.spawnChild((e) => startFailure?.(e));
    socket.connect(this._endpoint);
    void this.receiveLoop(socket);
    const startTimeout = this.opts.startTimeoutMs ?? 90_000;
    try {
      const reply = (await Promise.race([
        this.request("handshake", {
          protocolVersion: this.opts.protocolVersion ?? PROTOCOL_VERSION,
          client: "dpalign-ts/0.1.0",
          heartbeatIntervalMs: this.opts.heartbeatIntervalMs ?? 1000,
        }, startTimeout),
        failedToStart,
      ])) as HandshakeReply;
      this._handshake = reply;
    } catch (e) {
      await this.teardown(1_000);
      this._state = "closed";
      if (e instanceof WorkerRequestError && e.workerCode === "PROTOCOL_MISMATCH") throw new ProtocolMismatchError(e.message.replace(/^worker handshake: /, ""));
      if (e instanceof RequestTimeoutError) {
        const keysHint = this.opts.curve ? " (if the worker uses CurveZMQ, check that its authorized_keys lists this client's key and worker.pub matches)" : "";
        throw new WorkerStartError(`no handshake from the worker at ${this._endpoint} within ${startTimeout} ms${keysHint}${this.stderrHint()}`);
      }
      throw e;
    }
    startFailure = undefined;
    this.lastSeen = Date.now();
    this._state = "ready";
    const hbTimeout = this.opts.heartbeatTimeoutMs ?? Math.max(5_000, 5 * this._handshake.heartbeatIntervalMs);
    this.watchdog = setInterval(() => {
      if (this._state === "ready" && Date.now() - this.lastSeen > hbTimeout) {
        this.crash(`no heartbeat from the worker for ${Date.now() - this.lastSeen} ms (limit ${hbTimeout} ms)`);
      }
    }, Math.min(250, hbTimeout / 4));
    this.watchdog.unref();
  }

  private spawnChild(onStartFailure: (e: Error) => void): void {
    if (!this.opts.python) ensurePythonEnv();
    const python = this.opts.python ?? resolvePython();
    const pyPath = [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":");
    const args = ["-m", "dpalign_worker", "--endpoint", this._endpoint, "--parent-pid", String(process.pid), "--threads", String(this.opts.threads ?? 4)];
    if (this.opts.keysDir) args.push("--keys", this.opts.keysDir);
    const child = spawn(python, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, PYTHONPATH: pyPath, PYTHONUNBUFFERED: "1", ...this.opts.env },
    });
    this.child = child;
    let partial = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        this.stderrTail.push(line);
        if (this.stderrTail.length > STDERR_LINES_KEPT) this.stderrTail.shift();
        this.opts.onStderr?.(line);
      }
    });
    child.on("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "ENOENT"
        ? `cannot start the worker: Python interpreter ${JSON.stringify(python)} not found. Run \`npm run setup:python\` or set DPALIGN_PYTHON`
        : `cannot start the worker with ${python}: ${err.message}`;
      onStartFailure(new WorkerStartError(why));
    });
    child.on("exit", (code, signal) => {
      if (this.child !== child) return;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (this._state === "starting") onStartFailure(new WorkerStartError(`the worker process ${how} during start-up${this.stderrHint()}`));
      else if (this._state === "ready") this.crash(`the worker process (pid ${child.pid}) ${how}`);
    });
  }

  private stderrHint(): string {
    const tail = this.stderrTail.filter((l) => l.trim()).slice(-8);
    return tail.length ? `\nworker stderr (last lines):\n  ${tail.join("\n  ")}` : "";
  }

  private request(method: string, body: object, timeoutMs: number): Promise<unknown> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new WorkerClosedError());
    const id = this.nextId++;
    let bytes: Uint8Array[];
    try {
      bytes = encodeRequest(id, method, body);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeoutError(method, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { method, resolve, reject, timer });
      // zeromq.js allows one send in progress per socket: queue them.
      this.sendChain = this.sendChain
        .then(() => socket.send(bytes))
        .catch((e: Error) => {
          const p = this.pending.get(id);
          if (p) {
            this.pending.delete(id);
            clearTimeout(p.timer);
            p.reject(this._state === "ready" || this._state === "starting" ? new WorkerClosedError() : e);
          }
        });
    });
  }

  private async receiveLoop(socket: zmq.Dealer): Promise<void> {
    try {
      for await (const frames of socket) {
        this.lastSeen = Date.now();
        let reply;
        try {
          reply = decodeReply(frames);
        } catch (e) {
          this.opts.onStderr?.(`[client] dropped an undecodable reply (${frames.length} frame(s)): ${(e as Error).message}`);
          continue;
        }
        if (reply.kind === "heartbeat") continue;
        const p = this.pending.get(reply.id);
        if (!p) {
          if (reply.kind === "error" && reply.id === 0) this.opts.onStderr?.(`[client] worker error: ${reply.error.message}`);
          continue; // a late reply to a request that already timed out
        }
        this.pending.delete(reply.id);
        clearTimeout(p.timer);
        if (reply.kind === "error") p.reject(new WorkerRequestError(p.method, reply.error.code, reply.error.message, reply.error.details));
        else p.resolve(reply.result);
      }
    } catch {
      // The socket was closed: the loop ends.
    }
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
    this.failAll(err);
    void this.teardown(0);
    for (const l of this.crashListeners) l(err);
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }

  private async teardown(graceMs: number): Promise<void> {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((res) => child.once("exit", () => res()));
      if (graceMs > 0) {
        const timer = new Promise<boolean>((res) => setTimeout(() => res(false), graceMs).unref());
        const done = await Promise.race([exited.then(() => true), timer]);
        if (!done) child.kill("SIGKILL");
      } else {
        child.kill("SIGKILL");
      }
      await Promise.race([exited, new Promise((res) => setTimeout(res, 2_000).unref())]);
    }
    const socket = this.socket;
    this.socket = undefined;
    if (socket && !socket.closed) socket.close();
    if (this.spawned) this.removeSocketFile();
  }
}
