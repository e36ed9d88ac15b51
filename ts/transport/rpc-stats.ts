/**
 * Process-wide tallies of request/reply calls, for the time breakdown of a stage (where does a
 * PPO round go: the worker's handlers, the transport and serialization, or the control plane's
 * own code). Every RpcChannel adds to the same tally, so a phase timer can take the difference
 * of two snapshots whatever channels (one worker or a group) served the phase.
 */
export interface RpcTally {
  calls: number;
  /** From just before encoding the request to the decoded reply. */
  roundTripMs: number;
  /** Time the worker reports for its handler (Reply.handler_s). */
  handlerMs: number;
  /** Time spent in this process encoding requests and decoding replies (protobuf + tensor views). */
  codecMs: number;
  bytesOut: number;
  bytesIn: number;
}

export const emptyTally = (): RpcTally => ({ calls: 0, roundTripMs: 0, handlerMs: 0, codecMs: 0, bytesOut: 0, bytesIn: 0 });

const total: RpcTally = emptyTally();

export function recordCall(c: RpcTally): void {
  total.calls += c.calls;
  total.roundTripMs += c.roundTripMs;
  total.handlerMs += c.handlerMs;
  total.codecMs += c.codecMs;
  total.bytesOut += c.bytesOut;
  total.bytesIn += c.bytesIn;
}

export function rpcSnapshot(): RpcTally {
  return { ...total };
}

export function tallyDiff(after: RpcTally, before: RpcTally): RpcTally {
  return {
    calls: after.calls - before.calls,
    roundTripMs: after.roundTripMs - before.roundTripMs,
    handlerMs: after.handlerMs - before.handlerMs,
    codecMs: after.codecMs - before.codecMs,
    bytesOut: after.bytesOut - before.bytesOut,
    bytesIn: after.bytesIn - before.bytesIn,
  };
}

export const frameBytes = (frames: readonly Uint8Array[]): number => frames.reduce((a, f) => a + f.byteLength, 0);
