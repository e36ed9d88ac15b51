import { spawn } from "node:child_process";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Argv } from "yargs";
import { InvalidArgumentError } from "../../util/errors.js";
import { projectRoot, resolvePython } from "../../util/python.js";
import { keygen } from "../../transport/curve.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "worker [action]",
    "Start a worker by hand (to connect a control plane to it later, e.g. on another machine), or create CurveZMQ keys for one",
    (y) =>
      y
        .positional("action", { choices: ["serve", "keygen"] as const, default: "serve", describe: "serve: start a worker; keygen: write key files to --out" })
        .option("endpoint", { type: "string", describe: "address to bind: ipc:///path.sock or tcp://host:port" })
        .option("keys", { type: "string", describe: "CurveZMQ key directory from `dpalign worker keygen` (required for non-loopback tcp)" })
        .option("out", { type: "string", describe: "keygen: directory to write the key files to" })
        .option("threads", { type: "number", default: 4, describe: "requests executed concurrently" })
        .option("torch-threads", { type: "number", default: 0, describe: "torch intra-op threads (0: torch's default)" }),
    async (args) => {
      if (args.action === "keygen") {
        if (!args.out) throw new InvalidArgumentError("--out", "keygen needs a directory to write the keys to");
        const { dir } = keygen(args.out);
        process.stdout.write(
          `wrote CurveZMQ keys to ${dir}:\n` +
            "  worker.key, authorized_keys  go to the worker's machine (a directory readable only by its user), then there:\n" +
            `      dpalign worker --endpoint tcp://0.0.0.0:5555 --keys ${dir}\n` +
            "  worker.pub, client.key       stay with the control plane:\n" +
            `      dpalign run CONFIG --worker-endpoint tcp://WORKER-HOST:5555 --worker-keys ${dir}   (also sweep, demo, doctor)\n` +
            "  the worker must see the run directory and the model cache at the same paths (a shared filesystem; README: Remote workers)\n",
        );
        return;
      }
      if (!args.endpoint) throw new InvalidArgumentError("--endpoint", "give the address to bind, e.g. ipc:///tmp/dpalign.sock or tcp://0.0.0.0:5555");
      if (!/^(ipc|tcp):\/\/.+/.test(args.endpoint)) throw new InvalidArgumentError("--endpoint", `${JSON.stringify(args.endpoint)} is not an ipc:// or tcp:// address`);
      if (!Number.isInteger(args.threads) || args.threads < 1) throw new InvalidArgumentError("--threads", "must be a positive integer");
      const python = resolvePython();
      const pyArgs = ["-m", "dpalign_worker", "--endpoint", args.endpoint, "--threads", String(args.threads), "--torch-threads", String(args.torchThreads)];
      if (args.keys) pyArgs.push("--keys", args.keys);
      if (args.endpoint.startsWith("tcp://")) {
        const m = /^tcp:\/\/(.+):(\d+)$/.exec(args.endpoint);
        // bound to every interface: other machines know this one by its name
        const host = !m || ["0.0.0.0", "*", "[::]", "::"].includes(m[1]) ? hostname() : m[1];
        process.stderr.write(
          `dpalign worker: a control plane uses it with --worker-endpoint tcp://${host}:${m?.[2] ?? "PORT"}${args.keys ? " --worker-keys DIR (the keygen directory's worker.pub and client.key)" : ""}; ` +
            "it must see the run directory and model cache at the same paths (README: Remote workers)\n",
        );
      }
      const child = spawn(python, pyArgs, {
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
