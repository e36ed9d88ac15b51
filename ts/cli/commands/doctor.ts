import type { Argv } from "yargs";
import { formatDoctor, runDoctor } from "../../doctor/inspect.js";

export function register(cli: Argv): Argv {
  return cli.command(
    "doctor",
    "Check the Python side: interpreter, torch and device, worker package, protocol version, optional backends, and a real worker round trip",
    (y) =>
      y
        .option("json", { type: "boolean", default: false, describe: "print one JSON object instead of the table" })
        .option("round-trip", { type: "boolean", default: true, describe: "also start a worker and echo a tensor over ZeroMQ" }),
    async (args) => {
      const report = await runDoctor({
        roundTrip: args.roundTrip,
        onProgress: args.json ? undefined : (m) => process.stderr.write(`… ${m}\n`),
      });
      process.stdout.write(args.json ? JSON.stringify(report, null, 2) + "\n" : formatDoctor(report) + "\n");
      if (!report.healthy) process.exitCode = 1;
    },
  );
}
