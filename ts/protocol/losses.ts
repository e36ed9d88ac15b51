/**
 * The parameters of the worker's losses (TrainStepRequest.params in the schema) and their
 * defaults: the one place they are written. The run config (ts/pipeline/config.ts) takes its
 * defaults from here, and the worker requires every parameter, so no other default exists.
 */
import type { In } from "./messages.js";
import type { dpalign } from "./generated/worker.js";

/** PPO's clipped objective, every field set (the worker refuses a missing one). */
export type PpoParams = Required<In<dpalign.worker.v1.IPpoParams>>;

export const PPO_PARAM_DEFAULTS: Readonly<PpoParams> = { clipRange: 0.2, clipRangeValue: 0.2, vfCoef: 0.1 };
