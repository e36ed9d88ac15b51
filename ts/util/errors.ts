/**
 * Errors a user can cause carry a stable `code` and a message that says how to fix it. The CLI
 * prints `message` (never a stack trace) and exits with `exitCode` for these; anything else is a
 * bug and is reported with its stack.
 */
export class DpalignError extends Error {
  readonly code: string;
  readonly exitCode: number;
  constructor(code: string, message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.code = code;
    this.exitCode = options?.exitCode ?? 2;
  }
}

/** A bad flag, config field or argument value. `field` names what to change. */
export class InvalidArgumentError extends DpalignError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("INVALID_ARGUMENT", `${field}: ${message}`);
    this.field = field;
  }
}

/** A config file that does not parse or validate; `location` is file[:line] and field path. */
export class ConfigError extends DpalignError {
  constructor(message: string) {
    super("CONFIG_INVALID", message);
  }
}

/** Input data that is missing or malformed; the message names file and line. */
export class DataError extends DpalignError {
  constructor(message: string) {
    super("DATA_INVALID", message);
  }
}

/** A privacy plan or run that would exceed its (epsilon, delta) target. */
export class BudgetExceededError extends DpalignError {
  constructor(message: string) {
    super("BUDGET_EXCEEDED", message);
  }
}

/** An environment variable whose value cannot be used; `message` continues its name ("DPALIGN_PYTHON is set to ...") and says how to fix it. */
export class EnvVarError extends DpalignError {
  readonly variable: string;
  constructor(variable: string, message: string) {
    super("ENV_INVALID", `${variable} ${message}`);
    this.variable = variable;
  }
}
