/**
 * RpcChannel: the request/reply half of the worker protocol over one ZeroMQ DEALER socket, and
 * nothing about processes. It numbers requests, sends each as [envelope, tensor frames...],
 * matches replies by id (any number in flight), fails a request whose reply does not come within
 * its timeout, performs the handshake, and watches the worker's heartbeats (any message counts as
 * a sign of life). Replies that arrive after their request timed out are dropped.
 */
import * as zmq from "zeromq";
import { decodeReply, encodeRequest, TensorDecodeError } from "./codec.js";
import type { CurveClientKeys } from "./curve.js";
import { ProtocolMismatchError, RequestTimeoutError, WorkerClosedError, WorkerProtocolError, WorkerRequestError } from "./errors.js";
import type { HandshakeReply, HandshakeRequest, Method, ReplyOf, RequestOf } from "../protocol/messages.js";
import { frameBytes, recordCall } from "./rpc-stats.js";

export interface ChannelOptions {
  /** CurveZMQ keys for a worker that requires them. */
  curve?: CurveClientKeys;
  /** Diagnostics: undecodable replies, errors the worker sends outside any request. */
  onLog?: (line: string) => void;
  /**
   * The DEALER's routing id (1-255 bytes, not starting with a zero byte). A fixed one keeps the
   * worker's replies and heartbeats reaching this client across reconnects.
   */
  routingId?: string;
  /** Record the socket's connection events (see `connection`), for messages about remote workers. */
  observeConnection?: boolean;
}

/** What the socket saw while connecting: enough to tell an unreachable worker from refused keys. */
export interface ConnectionLog {
  /** TCP (or ipc) connections made. */
  connected: number;
  /** Connection attempts that failed and will be retried (refused, no route). */
  retries: number;
  /** ZMTP handshakes completed (the security mechanism included). */
  handshakes: number;
  /** The worker's ZAP handler refused this client's CurveZMQ key. */
  authFailures: number;
  /** The peers' security mechanisms differ (CurveZMQ on one side only), or another ZMTP protocol error. */
  protocolFailures: string[];
  /** Other handshake failures (e.g. a CurveZMQ server key that is not the worker's). */
  otherFailures: string[];
}

interface Pending {
  method: string;
  /** performance.now() before encoding, the request's bytes and its encode time (for rpc-stats). */
  t0: number;
  bytesOut: number;
  encodeMs: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class RpcChannel {
  private readonly socket: zmq.Dealer;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private sendChain: Promise<void> = Promise.resolve();
  private lastSeen = Date.now();
  private watchdog: NodeJS.Timeout | undefined;
  private _closed = false;
  private readonly connectionLog: ConnectionLog = { connected: 0, retries: 0, handshakes: 0, authFailures: 0, protocolFailures: [], otherFailures: [] };
  private readonly connectionListeners: ((log: Readonly<ConnectionLog>) => void)[] = [];

  /** Connects a DEALER to `endpoint` (ZeroMQ connects lazily: a worker may bind later). */
  constructor(readonly endpoint: string, private readonly opts: ChannelOptions = {}) {
    const socket = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0 });
    if (opts.curve) {
      socket.curveServerKey = opts.curve.serverPublicKey;
      socket.curvePublicKey = opts.curve.publicKey;
      socket.curveSecretKey = opts.curve.secretKey;
    }
    if (opts.routingId) socket.routingId = opts.routingId;
    if (opts.observeConnection) this.observe(socket);
    socket.connect(endpoint);
    this.socket = socket;
    void this.receiveLoop();
  }

  /** Connection events so far (all zero unless observeConnection). */
  get connection(): Readonly<ConnectionLog> {
    return this.connectionLog;
  }

  /** Calls `listener` after each connection event (observeConnection only). */
  onConnectionEvent(listener: (log: Readonly<ConnectionLog>) => void): void {
    this.connectionListeners.push(listener);
  }

  /**
   * Sends a ping nobody waits for (its reply is dropped as a late one): it tells the worker that
   * this control plane is still there while no request is being sent, and shows in no in-flight list.
   */
  sendKeepAlive(): void {
    if (this._closed) return;
    const frames = encodeRequest(this.nextId++, "ping", {});
    this.sendChain = this.sendChain.then(() => this.socket.send(frames)).catch(() => undefined);
  }

  get closed(): boolean {
    return this._closed;
  }

  /** Milliseconds since the last message from the worker (or since the channel was opened). */
  get silentMs(): number {
    return Date.now() - this.lastSeen;
  }

  /** Methods in flight, in the order they were sent. */
  inFlight(): string[] {
    return [...this.pending.values()].map((p) => p.method);
  }

  /**
   * Sends one request; resolves with its decoded result, rejects with WorkerRequestError (a typed
   * error reply), RequestTimeoutError, WorkerProtocolError (a reply that does not decode) or
   * WorkerClosedError. Tensors in `body` are sent from their own memory, not copied: do not
   * modify them until the request has settled.
   */
  request<M extends Method>(method: M, body: RequestOf<M>, timeoutMs: number): Promise<ReplyOf<M>> {
    if (this._closed) return Promise.reject(new WorkerClosedError());
    const id = this.nextId++;
    const t0 = performance.now();
    let frames: Uint8Array[];
    try {
      frames = encodeRequest(id, method, body);
    } catch (e) {
      return Promise.reject(e);
    }
    const encodeMs = performance.now() - t0;
    // The decoded result is the method's reply type: the codec decodes by the same schema.
    return new Promise<ReplyOf<M>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeoutError(method, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer, t0, bytesOut: frameBytes(frames), encodeMs });
      // zeromq.js allows one send in progress per socket: queue them.
      this.sendChain = this.sendChain
        .then(() => this.socket.send(frames))
        .catch((e: Error) => this.settle(id, undefined, this._closed ? new WorkerClosedError() : e));
    });
  }

  /** The handshake: a version the worker does not speak becomes ProtocolMismatchError. */
  async handshake(request: HandshakeRequest, timeoutMs: number): Promise<HandshakeReply> {
    try {
      return await this.request("handshake", request, timeoutMs);
    } catch (e) {
      if (e instanceof WorkerRequestError && e.workerCode === "PROTOCOL_MISMATCH") {
        throw new ProtocolMismatchError(e.message.replace(/^worker handshake: /, ""));
      }
      throw e;
    }
  }

  /**
   * Calls `onSilence` (once) when no message has come for `timeoutMs`; the worker sends
   * heartbeats, so silence means it is hung or gone. Checked every min(250, timeoutMs / 4) ms.
   */
  watchHeartbeats(timeoutMs: number, onSilence: (silentMs: number) => void): void {
    this.stopWatching();
    this.lastSeen = Date.now();
    this.watchdog = setInterval(() => {
      const silent = this.silentMs;
      if (silent > timeoutMs) {
        this.stopWatching();
        onSilence(silent);
      }
    }, Math.min(250, timeoutMs / 4));
    this.watchdog.unref();
  }

  /** Rejects every pending request with `err`. */
  failAll(err: Error): void {
    for (const id of [...this.pending.keys()]) this.settle(id, undefined, err);
  }

  /** Closes the socket; pending requests fail with `err` (default WorkerClosedError). Idempotent. */
  close(err: Error = new WorkerClosedError()): void {
    this.stopWatching();
    if (!this._closed) {
      this._closed = true;
      if (!this.socket.closed) this.socket.close();
    }
    this.failAll(err);
  }

  private observe(socket: zmq.Dealer): void {
    const log = this.connectionLog;
    const changed = () => {
      for (const l of this.connectionListeners) l(log);
    };
    socket.events.on("connect", () => (log.connected++, changed()));
    socket.events.on("connect:retry", () => (log.retries++, changed()));
    socket.events.on("handshake", () => (log.handshakes++, changed()));
    socket.events.on("handshake:error:auth", () => (log.authFailures++, changed()));
    socket.events.on("handshake:error:protocol", (e) => (log.protocolFailures.push(e.error?.code ?? e.error?.message ?? "protocol error"), changed()));
    socket.events.on("handshake:error:other", (e) => (log.otherFailures.push(e.error?.message ?? "handshake failed"), changed()));
  }

  private stopWatching(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  private settle(id: number, value: unknown, err?: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const frames of this.socket) {
        this.lastSeen = Date.now();
        this.onMessage(frames);
      }
    } catch {
      // The socket was closed: the loop ends.
    }
  }

  private onMessage(frames: Buffer[]): void {
    let reply;
    const d0 = performance.now();
    try {
      reply = decodeReply(frames);
    } catch (e) {
      const id = e instanceof TensorDecodeError ? e.replyId : undefined;
      const p = id === undefined ? undefined : this.pending.get(id);
      if (id !== undefined && p) this.settle(id, undefined, new WorkerProtocolError(p.method, (e as Error).message));
      else this.opts.onLog?.(`[client] dropped an undecodable reply (${frames.length} frame(s), ${frames[0]?.length ?? 0} bytes): ${(e as Error).message}`);
      return;
    }
    if (reply.kind === "heartbeat") return;
    const p = this.pending.get(reply.id);
    if (!p) {
      if (reply.kind === "error" && reply.id === 0) this.opts.onLog?.(`[client] worker error: ${reply.error.message}`);
      return; // a late reply to a request that already timed out
    }
    if (reply.kind === "error") this.settle(reply.id, undefined, new WorkerRequestError(p.method, reply.error.code, reply.error.message, reply.error.details));
    else {
      const now = performance.now();
      recordCall({
        calls: 1, roundTripMs: now - p.t0, handlerMs: reply.handlerS * 1000, codecMs: p.encodeMs + (now - d0),
        bytesOut: p.bytesOut, bytesIn: frameBytes(frames),
      });
      this.settle(reply.id, reply.result);
    }
  }
}
