/**
 * Where a stage's time goes: named phases (generation, scoring, train steps, ledger and
 * checkpoint ...) timed on the control plane, each split by the worker calls made inside it into
 * the worker's handler time, transport (ZeroMQ, the worker's own decoding and queueing) and this
 * process's encode/decode; what a phase spends outside worker calls is the control plane's own
 * code. Stage wall time minus the phases is "control plane, other".
 *
 * These are released like the stage's wall time (report.md): totals over a stage, rounded to
 * 0.1 s. Wall time grows with realised batch sizes, a timing side channel that the DP accounting
 * does not cover; totals over a whole stage are what the already-released stage time shows.
 */
import { emptyTally, rpcSnapshot, tallyDiff, type RpcTally } from "../transport/rpc-stats.js";

export interface PhaseRow {
  phase: string;
  /** Wall seconds in the phase. */
  wallS: number;
  calls: number;
  /** Worker handler seconds (summed over workers when several serve a phase). */
  workerS: number;
  /** Round trips minus handler time minus codec: ZeroMQ, the worker's decoding and queueing. */
  transportS: number;
  /** Encoding requests and decoding replies in this process. */
  codecS: number;
  /** Wall time in the phase outside worker calls: the control plane's own code. */
  controlS: number;
}

interface Acc { wallMs: number; rpc: RpcTally }

export class PhaseClock {
  private readonly acc = new Map<string, Acc>();
  private readonly t0 = performance.now();

  /** Times `fn` as `phase` (phases may repeat; they add up). Phases must not nest. */
  async time<T>(phase: string, fn: () => Promise<T>): Promise<T> {
    const r0 = rpcSnapshot();
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      const a = this.acc.get(phase) ?? { wallMs: 0, rpc: emptyTally() };
      a.wallMs += performance.now() - t0;
      const d = tallyDiff(rpcSnapshot(), r0);
      for (const k of Object.keys(d) as (keyof RpcTally)[]) a.rpc[k] += d[k];
      this.acc.set(phase, a);
    }
  }

  /** Rows per phase in first-use order, then "control plane, other" for the rest of the wall time since construction. */
  rows(): PhaseRow[] {
    const rows: PhaseRow[] = [];
    let inPhases = 0;
    for (const [phase, a] of this.acc) {
      inPhases += a.wallMs;
      rows.push(row(phase, a.wallMs, a.rpc));
    }
    const rest = Math.max(0, performance.now() - this.t0 - inPhases);
    rows.push(row("control plane, other", rest, emptyTally()));
    return rows;
  }
}

const s1 = (ms: number) => Math.round(ms / 100) / 10;

function row(phase: string, wallMs: number, t: RpcTally): PhaseRow {
  const transport = Math.max(0, t.roundTripMs - t.handlerMs - t.codecMs);
  // Round trips can overlap (several workers): the control plane's share is what is left of the wall.
  const control = Math.max(0, wallMs - Math.min(wallMs, t.roundTripMs));
  return { phase, wallS: s1(wallMs), calls: t.calls, workerS: s1(t.handlerMs), transportS: s1(transport), codecS: s1(t.codecMs), controlS: s1(control) };
}

/** A markdown table of one stage's phases with each one's share of the stage. */
export function renderPhaseTable(rows: readonly PhaseRow[]): string[] {
  const total = rows.reduce((a, r) => a + r.wallS, 0) || 1;
  const pct = (x: number) => `${Math.round((100 * x) / total)}%`;
  return [
    "| phase | wall s | share | worker calls | worker compute s | transport s | encode/decode s | control plane s |",
    "|---|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.phase} | ${r.wallS.toFixed(1)} | ${pct(r.wallS)} | ${r.calls} | ${r.workerS.toFixed(1)} | ${r.transportS.toFixed(1)} | ${r.codecS.toFixed(1)} | ${r.controlS.toFixed(1)} |`),
  ];
}
