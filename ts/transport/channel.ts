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

export interface ChannelOptions {
  /** CurveZMQ keys for a worker that requires them. */
  curve?: CurveClientKeys;
  /** Diagnostics: undecodable replies, errors the worker sends outside any request. */
  onLog?: (line: string) => void;
}

interface Pending {
  method: string;
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

  /** Connects a DEALER to `endpoint` (ZeroMQ connects lazily: a worker may bind later). */
  constructor(readonly endpoint: string, private readonly opts: ChannelOptions = {}) {
    const socket = new zmq.Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0 });
    if (opts.curve) {
      socket.curveServerKey = opts.curve.serverPublicKey;
      socket.curvePublicKey = opts.curve.publicKey;
      socket.curveSecretKey = opts.curve.secretKey;
    }
    socket.connect(endpoint);
    this.socket = socket;
    void this.receiveLoop();
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
    let frames: Uint8Array[];
    try {
      frames = encodeRequest(id, method, body);
    } catch (e) {
      return Promise.reject(e);
    }
    // The decoded result is the method's reply type: the codec decodes by the same schema.
    return new Promise<ReplyOf<M>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestTimeoutError(method, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject, timer });
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
    else this.settle(reply.id, reply.result);
  }
}
