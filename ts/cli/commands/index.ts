import type { Argv } from "yargs";
import { register as doctor } from "./doctor.js";
import { register as worker } from "./worker.js";
import { register as run } from "./run.js";
import { register as demo } from "./demo.js";
import { register as sweep } from "./sweep.js";
import { register as pretrain } from "./pretrain.js";
import { register as data } from "./data.js";
import { register as privacy } from "./privacy.js";
import { register as audit } from "./audit.js";
import { register as plot } from "./plot.js";
import { register as exportCmd } from "./export.js";

/**
 * Every CLI command is a module in this folder exporting `register(cli)`; it is listed here once.
 * Keeping the list explicit makes the command set easy to read and to test.
 */
export type CommandRegistrar = (cli: Argv) => Argv;

export const commands: CommandRegistrar[] = [doctor, worker, run, demo, sweep, pretrain, data, privacy, audit, exportCmd, plot];
