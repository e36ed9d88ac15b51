import { DpalignError } from "../util/errors.js";

/** The worker process exited or stopped sending heartbeats; every pending request fails with this. */
export class WorkerCrashedError extends DpalignError {
  readonly inFlight: string[];
  constructor(message: string, inFlight: string[]) {
    super("WORKER_CRASHED", message, { exitCode: 3 });
    this.inFlight = inFlight;
  }
}

/** A request got no reply within its timeout. The worker may still be busy with it. */
export class RequestTimeoutError extends DpalignError {
  constructor(method: string, timeoutMs: number) {
    super("REQUEST_TIMEOUT", `worker request ${method} got no reply within ${timeoutMs} ms; raise the timeout (requestTimeoutMs) if the work is legitimately long`);
  }
}

/** The worker speaks another protocol version. */
export class ProtocolMismatchError extends DpalignError {
  constructor(message: string) {
    super("PROTOCOL_MISMATCH", message);
  }
}

/** The worker serves another control plane: a worker has one session at a time. */
export class WorkerBusyError extends DpalignError {
  constructor(message: string) {
    super("WORKER_BUSY", message);
  }
}

/** The worker could not be started or reached (missing Python, bad endpoint, slow start). */
export class WorkerStartError extends DpalignError {
  constructor(message: string) {
    super("WORKER_START_FAILED", message);
  }
}

/** The worker answered with a typed error (code from proto ErrorCode, e.g. INVALID_ARGUMENT). */
export class WorkerRequestError extends DpalignError {
  readonly workerCode: string;
  readonly details: Record<string, string>;
  readonly method: string;
  constructor(method: string, workerCode: string, message: string, details: Record<string, string>) {
    super(`WORKER_${workerCode}`, `worker ${method}: ${message}`);
    this.workerCode = workerCode;
    this.details = details;
    this.method = method;
  }
}

/** The client was closed; requests made after close fail with this. */
export class WorkerClosedError extends DpalignError {
  constructor() {
    super("WORKER_CLOSED", "the worker client is closed");
  }
}

/**
 * A reply that does not decode: its tensors do not match its frames, or its envelope names no
 * result. A bug or a version skew between dpalign and dpalign_worker, not the caller's doing.
 */
export class WorkerProtocolError extends DpalignError {
  readonly method: string;
  constructor(method: string, message: string) {
    super("WORKER_PROTOCOL_ERROR", `worker ${method}: the reply does not decode (${message}); check that dpalign and dpalign_worker come from the same version`);
    this.method = method;
  }
}
