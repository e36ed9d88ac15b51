/**
 * What the typed worker API (ts/worker/api.ts) needs from a transport (ts/transport/client.ts):
 * one typed request/reply call. Both import it from here, so neither imports the other.
 */
import type { Method, ReplyOf, RequestOf } from "./messages.js";

export interface CallOptions {
  /** Per-request timeout in milliseconds; the client's default applies when absent. */
  timeoutMs?: number;
}

export interface RpcCaller {
  call<M extends Method>(method: M, request: RequestOf<M>, options?: CallOptions): Promise<ReplyOf<M>>;
}
