/**
 * ProcessSupervisor: one child process, and nothing about ZeroMQ or the protocol. It spawns the
 * process, keeps the last lines of its stderr (for error messages), reports its exit once (exit
 * code, signal, or the reason it could not be started), stops it (a grace period to exit on its
 * own, then SIGKILL), and removes a file the child owns (an ipc:// socket) once the child is gone,
 * also when this process exits abruptly without stopping it. On this process's exit a child still
 * running gets SIGTERM; a child that must also outlive a SIGKILL of this process watches its
 * parent itself (the worker's --parent-pid).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (ENOENT: no such program, EACCES ...). */
  spawnError?: NodeJS.ErrnoException;
}

export interface SupervisorOptions {
  command: string;
  args: readonly string[];
  /** The child's whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Lines of stderr kept for stderrTail() (default 40). */
  stderrLines?: number;
  /** Receives each line the child writes to stderr. */
  onStderr?: (line: string) => void;
  /** A file the child creates (an ipc:// socket) that must not outlive it. */
  cleanupFile?: string;
}

/** How long an exit waits for the rest of the child's stderr before it is reported. */
const STDERR_DRAIN_MS = 100;

export class ProcessSupervisor {
  private readonly child: ChildProcess;
  private readonly tail: string[] = [];
  private readonly listeners: ((info: ExitInfo) => void)[] = [];
  private info: ExitInfo | undefined;
  private disposed = false;
  /** Resolves once, when the child has exited or failed to start. */
  readonly exited: Promise<ExitInfo>;

  private constructor(private readonly opts: SupervisorOptions) {
    const child = spawn(opts.command, [...opts.args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    this.child = child;
    process.once("exit", this.onParentExit);
    let resolveExit!: (info: ExitInfo) => void;
    this.exited = new Promise((res) => (resolveExit = res));

    const keep = opts.stderrLines ?? 40;
    let partial = "";
    const stderrEnded = new Promise<void>((res) => {
      if (!child.stderr) return res();
      child.stderr.once("end", res);
      child.stderr.once("error", () => res());
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) this.addLine(line, keep);
    });
    void stderrEnded.then(() => {
      if (partial) this.addLine(partial, keep);
      partial = "";
    });

    const finish = async (info: ExitInfo) => {
      if (this.info) return;
      this.info = info;
      if (!info.spawnError) await Promise.race([stderrEnded, sleep(STDERR_DRAIN_MS)]);
      if (partial) this.addLine(partial, keep);
      partial = "";
      resolveExit(info);
      for (const l of this.listeners.splice(0)) l(info);
    };
    child.on("error", (err: NodeJS.ErrnoException) => {
      // Also emitted when a signal cannot be sent; only a child without a pid never started.
      if (child.pid === undefined) void finish({ code: null, signal: null, spawnError: err });
    });
    child.on("exit", (code, signal) => void finish({ code, signal }));
  }

  /** Spawns `command args` with stdout ignored and stderr piped into the ring buffer. */
  static start(opts: SupervisorOptions): ProcessSupervisor {
    return new ProcessSupervisor(opts);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True until the child has exited (or failed to start). */
  get running(): boolean {
    return this.info === undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The exit, once it happened. */
  get exitInfo(): ExitInfo | undefined {
    return this.info;
  }

  /** Calls `listener` once when the child exits (at once, asynchronously, if it already has). */
  onExit(listener: (info: ExitInfo) => void): void {
    if (this.info) {
      const info = this.info;
      queueMicrotask(() => listener(info));
    } else {
      this.listeners.push(listener);
    }
  }

  /** The last `n` non-blank lines of the child's stderr. */
  stderrTail(n = 8): string[] {
    return this.tail.filter((l) => l.trim()).slice(-n);
  }

  /** `stderrTail` as an indented block for error messages ("" when there is none). */
  stderrHint(n = 8): string {
    const tail = this.stderrTail(n);
    return tail.length ? `\nworker stderr (last lines):\n  ${tail.join("\n  ")}` : "";
  }

  /** Sends `signal` if the child still runs. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.running) this.child.kill(signal);
  }

  /**
   * Waits up to `graceMs` for the child to exit on its own (0: not at all), then SIGKILLs it and
   * waits up to 2 s more; then removes the cleanup file. Idempotent.
   */
  async stop(graceMs: number): Promise<ExitInfo | undefined> {
    if (this.running) {
      const exited = graceMs > 0 ? await Promise.race([this.exited.then(() => true), sleep(graceMs).then(() => false)]) : false;
      if (!exited) this.kill("SIGKILL");
      await Promise.race([this.exited, sleep(2_000)]);
    }
    this.dispose();
    return this.info;
  }

  private addLine(line: string, keep: number): void {
    this.tail.push(line);
    if (this.tail.length > keep) this.tail.shift();
    this.opts.onStderr?.(line);
  }

  private removeFile(): void {
    if (this.opts.cleanupFile) rmSync(this.opts.cleanupFile, { force: true });
  }

  /** Removes the cleanup file and the exit listener; the child is left to stop(). */
  private dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    process.removeListener("exit", this.onParentExit);
    this.removeFile();
  }

  // A process that exits without stopping the child (a second Ctrl-C, process.exit) still removes
  // the socket file, and does not leave the child behind.
  private readonly onParentExit = () => {
    if (this.running) this.child.kill("SIGTERM");
    this.removeFile();
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms).unref());
}
