/**
 * The tensor names of each loss's batch are written twice, once per language: the TS builders
 * (ts/worker/batches.ts, its `T` constants) and the worker's LOSS_TENSORS
 * (py_runtime/dpalign_worker/engine/objectives.py). This test asks the worker's module for its
 * list and checks that every builder produces exactly the tensors its loss reads.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot, resolvePython } from "../../../ts/util/python.js";
import { classificationBatch, lmBatch, pairwiseBatch, ppoBatch, T } from "../../../ts/worker/batches.js";
import type { TrainStepRequest } from "../../../ts/protocol/messages.js";

type Loss = NonNullable<TrainStepRequest["loss"]>;

function workerLossTensors(): Record<string, [string[], string[]]> {
  const code = "import json; from dpalign_worker.engine.objectives import LOSS_TENSORS; print(json.dumps(LOSS_TENSORS))";
  const out = execFileSync(resolvePython(), ["-c", code], {
    encoding: "utf8", env: { ...process.env, PYTHONPATH: join(projectRoot, "py_runtime") },
  });
  return JSON.parse(out) as Record<string, [string[], string[]]>;
}

describe("tensor names of the loss batches", () => {
  it("are the same on both sides of the protocol", () => {
    const worker = workerLossTensors();
    const rows = [[1, 2, 3], [4, 5]];
    const built: Record<Exclude<Loss, "loss_unspecified">, string[]> = {
      causal_lm: Object.keys(lmBatch(rows, 0)),
      classification: Object.keys(classificationBatch(rows, [0, 1], 0)),
      pairwise_reward: Object.keys(pairwiseBatch(rows, rows, 0)),
      ppo: Object.keys(ppoBatch({ queries: rows, responses: rows, logprobs: rows, values: rows, advantages: rows, returns: rows }, [0, 1], 0)),
      dirac_canary: [T.canaryIndex, T.canaryScale], // built by ts/audit/run.ts
    };
    expect(Object.keys(worker).sort()).toEqual(Object.keys(built).sort());
    for (const [loss, names] of Object.entries(built)) {
      const [required, optional] = worker[loss];
      expect(new Set(names), loss).toEqual(new Set([...required, ...optional]));
    }
    const tNames = new Set<string>(Object.values(T));
    for (const [required, optional] of Object.values(worker)) for (const n of [...required, ...optional]) expect(tNames.has(n), n).toBe(true);
  }, 60_000);
});
