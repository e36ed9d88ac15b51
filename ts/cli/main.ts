import { createRequire } from "node:module";
import type { Argv } from "yargs";
import { hideBin } from "yargs/helpers";
import { DpalignError } from "../util/errors.js";
import { commands } from "./commands/index.js";

// yargs's ESM build wraps help text at a fixed column, cutting words in two (its bundled cliui
// wraps per character in ESM); the CommonJS build wraps at word boundaries (wrap-ansi).
const require = createRequire(import.meta.url);
const yargs = require("yargs") as (args: string[]) => Argv;
const { version } = require("../../package.json") as { version: string };

/** Prints a user error as one line and exits non-zero; anything else is a bug, shown with its stack. */
export function reportAndExit(err: unknown): never {
  if (err instanceof DpalignError) {
    process.stderr.write(`dpalign: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`dpalign: internal error (please report): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(70);
}

async function main(argv: string[]): Promise<void> {
  let cli = yargs(argv)
    .scriptName("dpalign")
    .usage("$0 <command> [options]\n\nAlign language models with reinforcement learning under differential privacy.")
    .strict()
    .demandCommand(1, "Name a command; `dpalign --help` lists them.")
    .recommendCommands()
    .help()
    .alias("h", "help")
    .version("version", "Show the version number", version)
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err, y) => {
      // yargs's own validation errors (YError: a flag without its value, ...) are usage errors.
      if (err && err.name !== "YError") reportAndExit(err);
      if (err && !msg) msg = err.message;
      void y;
      process.stderr.write(`dpalign: ${msg}\nRun \`dpalign --help\` for usage.\n`);
      process.exit(2);
    });
  for (const register of commands) cli = register(cli);
  await cli.parseAsync();
}

main(hideBin(process.argv)).catch(reportAndExit);
