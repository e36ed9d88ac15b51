/** Errors about a run directory's state (lock, ledger, resume), each with a stable code and the fix. */
import { DpalignError } from "../util/errors.js";

/** Another process holds the run directory, or a dead one left its lock. */
export class RunLockedError extends DpalignError {
  constructor(message: string) {
    super("RUN_LOCKED", message, { exitCode: 4 });
  }
}

/** The run directory's files are damaged, tampered with, or disagree with each other or the plan. */
export class RunIntegrityError extends DpalignError {
  constructor(message: string) {
    super("RUN_INTEGRITY", message, { exitCode: 5 });
  }
}

/** A resume whose config, data or stage split differs from the run it would continue. */
export class ResumeMismatchError extends DpalignError {
  constructor(message: string) {
    super("RESUME_MISMATCH", message, { exitCode: 5 });
  }
}

/** The run was stopped by a signal or a test hook; what was saved is resumable. */
export class InterruptedError extends DpalignError {
  constructor(message: string, exitCode = 130) {
    super("INTERRUPTED", message, { exitCode });
  }
}
