/**
 * --tensorboard: the event-file format (TFRecord framing with masked CRC-32C, Event protobuf) read
 * back record by record, and a real run's scalars: released figures only (evaluation reward,
 * epsilon per stage at each commit point, wall time), private-batch statistics only with
 * --verbose-private. Also `dpalign export` on that run's checkpoints (peft and merged, LoRA on
 * `c_attn` and on `c_attn[q,v]`), loaded by peft / transformers in Python and compared with
 * dpalign's forward.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WorkerClient } from "../../../ts/transport/client.js";
import { WorkerApi } from "../../../ts/worker/api.js";
import { parseConfig } from "../../../ts/pipeline/config.js";
import { runPipeline } from "../../../ts/pipeline/run.js";
import { accountantCalibrator } from "../../../ts/pipeline/privacy.js";
import { crc32c, encodeEvent, EventFileWriter, readEventFile, tfRecord, type ScalarEvent } from "../../../ts/pipeline/tensorboard.js";
import { exportCheckpoint } from "../../../ts/cli/commands/export.js";
import { projectRoot, resolvePython } from "../../../ts/util/python.js";
import { TINY, tmpDir, writeTinyImdb } from "./helpers.js";

const f32 = (x: number) => Math.fround(x);

describe("event files", () => {
  it("uses CRC-32C (Castagnoli) and TFRecord framing that reads back with both CRCs checked", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283); // the standard check value
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    const dir = tmpDir("dpalign-tb-");
    const w = new EventFileWriter(dir);
    expect(w.path).toMatch(/events\.out\.tfevents\.\d+\./);
    w.scalar("privacy/epsilon/sft", 1.25, 3, 1700000000.5);
    w.scalar("eval/reward/aligned", -0.1, 0, 1700000001);
    const ev = readEventFile(w.path);
    expect(ev[0].fileVersion).toBe("brain.Event:2");
    expect(ev.slice(1)).toEqual([
      { wallTime: 1700000000.5, step: 3, tag: "privacy/epsilon/sft", value: 1.25 },
      { wallTime: 1700000001, step: 0, tag: "eval/reward/aligned", value: f32(-0.1) },
    ]);
    // a flipped byte anywhere is caught by a CRC
    const bytes = readFileSync(w.path);
    for (const at of [3, 14, bytes.length - 6]) {
      const bad = Buffer.from(bytes);
      bad[at] ^= 0x40;
      const p = join(dir, `bad-${at}`);
      writeFileSync(p, bad);
      expect(() => readEventFile(p)).toThrow(/CRC mismatch|truncated/);
    }
  });

  it("encodes an Event as TensorFlow's protobuf does (reference bytes)", () => {
    // Event{wall_time: 1.0, step: 2, summary{value{tag: "a", simple_value: 0.5}}} as google.protobuf serialises it from
    // event.proto's field numbers (checked once in Python; the same library parsed a whole event file of a run)
    const want = Buffer.from("09000000000000f03f10022a0a0a080a016115" + "0000003f", "hex");
    expect(encodeEvent({ wallTime: 1, step: 2, tag: "a", value: 0.5 }).equals(want)).toBe(true);
    expect(tfRecord(want).length).toBe(want.length + 16);
  });
});

let client: WorkerClient;
let api: WorkerApi;
let dataDir: string;
let cacheDir: string;

beforeAll(async () => {
  client = await WorkerClient.spawn({ requestTimeoutMs: 60_000 });
  api = new WorkerApi(client);
  dataDir = writeTinyImdb(tmpDir(), { train: 40, test: 40, unsup: 40 });
  cacheDir = tmpDir("dpalign-cache-");
});
afterAll(async () => {
  await client?.close();
});

function eventsOf(root: string, run: string): ScalarEvent[] {
  const dir = join(root, run);
  const files = readdirSync(dir).filter((f) => f.includes("tfevents"));
  expect(files).toHaveLength(1);
  return readEventFile(join(dir, files[0])).filter((e) => e.tag !== undefined);
}

/** Loads an export in Python (peft on the exported base, or AutoModelForCausalLM) and compares with dpalign's forward of the checkpoint. */
// Child processes run asynchronously: a blocked event loop would miss the shared worker's heartbeats.
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const p = spawn(cmd, args, { cwd: projectRoot, env });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("close", (status) => res({ status, stdout, stderr }));
  });
}

async function pythonCompare(ckpt: string, out: string, format: "peft" | "merged"): Promise<number> {
  const code = `
import sys, torch
from dpalign_worker.export import load_checkpoint_model
from transformers import AutoModelForCausalLM
ckpt, out, fmt = sys.argv[1:4]
m, _ = load_checkpoint_model(ckpt)
ids = torch.randint(0, len(m.tokenizer), (2, 9), generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    want = m.model(ids, want="logits")["logits"]
    if fmt == "peft":
        from peft import PeftModel
        got = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out + "/base"), out).eval()
    else:
        got = AutoModelForCausalLM.from_pretrained(out).eval()
    print(float((got(input_ids=ids).logits - want).abs().max()))
`;
  const r = await run(resolvePython(), ["-c", code, ckpt, out, format], { ...process.env, PYTHONPATH: join(projectRoot, "py_runtime") });
  expect(r.status, r.stderr).toBe(0);
  return Number(r.stdout.trim().split("\n").pop());
}

function cliExport(args: string[]) {
  return run(process.execPath, [join(projectRoot, "bin", "dpalign.js"), "export", ...args]);
}

describe("a run with --tensorboard", () => {
  it("writes released scalars only: evaluation reward per model, epsilon per stage as the ledger grows, wall time", async () => {
    const tb = tmpDir("dpalign-tb-");
    const cfg = parseConfig(TINY);
    const runDir = join(tmpDir(), "run");
    const s = await runPipeline({ cfg, runDir, dataDir, cacheDir, api, tensorboard: tb });
    const ev = eventsOf(tb, "run");
    const tags = new Set(ev.map((e) => e.tag!));
    expect([...tags].filter((t) => t.startsWith("private"))).toEqual([]);
    for (const e of s.evals) {
      expect(ev.find((x) => x.tag === `eval/reward/${e.model}`)!.value).toBe(f32(e.meanReward));
      expect(ev.find((x) => x.tag === `eval/reward_ci95/${e.model}`)!.value).toBe(f32(e.ci95));
    }
    for (const stage of ["sft", "ppo"] as const) {
      const plan = s.plan[stage]!;
      const eps = ev.filter((x) => x.tag === `privacy/epsilon/${stage}`);
      // one point per commit (checkpointEvery 1 for SFT; PPO commits per rollout round) and the final one
      expect(eps.length).toBeGreaterThanOrEqual(2);
      const steps = eps.map((x) => x.step);
      expect(steps).toEqual([...steps].sort((a, b) => a - b));
      for (const x of eps) {
        expect(x.value).toBe(f32(accountantCalibrator.epsilon({ q: plan.q, steps: x.step, sigma: plan.sigmaEffective, delta: s.plan.delta, accountant: s.plan.accountant })));
      }
      const final = s.privacy.stages.find((st) => st.stage === stage)!;
      expect(eps.at(-1)!.step).toBe(final.batchesExecuted);
      expect(eps.at(-1)!.value).toBe(f32(final.epsilon));
      expect(final.epsilon).toBeLessThanOrEqual(8 * (1 + 1e-6));
      expect(ev.find((x) => x.tag === `time/wall_s/${stage}`)!.value).toBe(f32(s.stageWallS[stage]));
    }
    expect(ev.find((x) => x.tag === "privacy/epsilon/composed")!.value).toBe(f32(s.privacy.composed.epsilon));
    expect(ev.find((x) => x.tag === "eval/reward_classifier_accuracy")!.value).toBe(f32(s.reward!.heldOutAccuracy));
    // nothing was written into the run directory by the hook
    expect(readdirSync(runDir).some((f) => f.includes("tfevents"))).toBe(false);

    // `dpalign export` of this run's checkpoints (LoRA on c_attn)
    const out = join(tmpDir("dpalign-export-"), "peft");
    const r = await cliExport([runDir, "--format", "peft", "--out", out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/logits match dpalign's forward/);
    expect(existsSync(join(out, "adapter_config.json")) && existsSync(join(out, "adapter_model.safetensors"))).toBe(true);
    expect(await pythonCompare(join(runDir, "checkpoints", "ppo", "last"), out, "peft")).toBeLessThan(1e-5);
    const merged = join(tmpDir("dpalign-export-"), "merged");
    expect((await cliExport([runDir, "--stage", "sft", "--format", "merged", "--out", merged])).status).toBe(0);
    expect(await pythonCompare(join(runDir, "checkpoints", "sft", "last"), merged, "merged")).toBeLessThan(1e-5);
  }, 180_000);

  it("adds private-batch statistics under private/ only with --verbose-private, with a warning; exports c_attn[q,v] exactly", async () => {
    const tb = tmpDir("dpalign-tb-");
    const cfg = parseConfig({ ...TINY, model: { ...TINY.model, lora: { targetModules: ["c_attn[q,v]"] } } });
    const runDir = join(tmpDir(), "run-qv");
    const logs: string[] = [];
    const progress = { start() {}, update() {}, stop() {}, log: (l: string) => void logs.push(l) };
    await runPipeline({ cfg, runDir, dataDir, cacheDir, api, tensorboard: tb, showPrivate: true, progress });
    const ev = eventsOf(tb, "run-qv");
    const priv = ev.filter((x) => x.tag!.startsWith("private/"));
    expect(priv.some((x) => x.tag!.startsWith("private/sft/"))).toBe(true);
    expect(priv.some((x) => x.tag!.startsWith("private/ppo/"))).toBe(true);
    expect(logs.some((l) => /WARNING: --verbose-private: .*tfevents.* do not publish/.test(l))).toBe(true);

    const out = join(tmpDir("dpalign-export-"), "peft");
    const r = await cliExport([runDir, "--format", "peft", "--out", out]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/key third are zero/);
    expect(readFileSync(join(out, "README.md"), "utf8")).toMatch(/key third/);
    expect(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).target_modules).toEqual(["c_attn"]);
    expect(await pythonCompare(join(runDir, "checkpoints", "ppo", "last"), out, "peft")).toBeLessThan(1e-5);
  }, 180_000);
});

describe("dpalign export refuses", () => {
  it("a run directory without the checkpoint, naming it", async () => {
    const runDir = tmpDir("dpalign-run-");
    mkdirSync(join(runDir, "checkpoints", "sft", "last"), { recursive: true });
    expect(() => exportCheckpoint(runDir, "aligned")).toThrow(/has no checkpoint of the aligned policy \(DP-PPO\) \(checkpoints\/ppo\/last\/manifest\.json\).*--stage sft/);
    expect(() => exportCheckpoint(runDir, "sft")).toThrow(/has no checkpoint of the SFT model/);
    expect(() => exportCheckpoint(join(runDir, "nope"), "sft")).toThrow(/RUN: .* is not a run directory/);
    const r = await cliExport([runDir, "--format", "peft", "--out", join(runDir, "out")]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^dpalign: .*has no checkpoint of the aligned policy/m);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });
});
