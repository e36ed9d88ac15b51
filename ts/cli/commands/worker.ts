import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Argv } from "yargs";
import { InvalidArgumentError } from "../../util/errors.js";
import { projectRoot, resolvePython } from "../../util/python.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "worker",
    "Start a worker by hand (to connect a control plane to it later, e.g. on another machine)",
    (y) =>
      y
        .option("endpoint", { type: "string", demandOption: true, describe: "address to bind: ipc:///path.sock or tcp://host:port" })
        .option("threads", { type: "number", default: 4, describe: "requests executed concurrently" })
        .option("torch-threads", { type: "number", default: 0, describe: "torch intra-op threads (0: torch's default)" }),
    async (args) => {
      if (!/^(ipc|tcp):\/\/.+/.test(args.endpoint)) throw new InvalidArgumentError("--endpoint", `${JSON.stringify(args.endpoint)} is not an ipc:// or tcp:// address`);
      if (!Number.isInteger(args.threads) || args.threads < 1) throw new InvalidArgumentError("--threads", "must be a positive integer");
      const python = resolvePython();
      const child = spawn(python, ["-m", "dpalign_worker", "--endpoint", args.endpoint, "--threads", String(args.threads), "--torch-threads", String(args.torchThreads)], {
        stdio: "inherit",
        env: { ...process.env, PYTHONPATH: [join(projectRoot, "py_runtime"), process.env.PYTHONPATH].filter(Boolean).join(":") },
      });
      for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => child.kill(sig));
      await new Promise<void>((resolve, reject) => {
        child.on("error", (e: NodeJS.ErrnoException) =>
          reject(new InvalidArgumentError("python", e.code === "ENOENT" ? `${python} not found; run \`npm run setup:python\` or set DPALIGN_PYTHON` : e.message)),
        );
        child.on("exit", (code) => {
          process.exitCode = code ?? 1;
          resolve();
        });
      });
    },
  );
}
