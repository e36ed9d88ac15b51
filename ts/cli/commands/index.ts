import type { Argv } from "yargs";

/**
 * Every CLI command is a module in this folder exporting `register(cli)`; it is listed here once.
 * Keeping the list explicit makes the command set easy to read and to test.
 */
export type CommandRegistrar = (cli: Argv) => Argv;

export const commands: CommandRegistrar[] = [];
