/**
 * KL coefficient control. The adaptive controller (Ziegler et al. 2020) moves beta from the
 * batch's mean KL, so each example's reward depends on the others: refused in DP mode
 * (DESIGN.md rule 2). The fixed controller is the DP-mode choice.
 */
import { InvalidArgumentError } from "../util/errors.js";
import type { DpContext } from "./normalize.js";

export interface KlController {
  readonly kind: "fixed" | "adaptive";
  /** The current coefficient beta. */
  value(): number;
  /** Called once per rollout batch with that batch's mean KL and size. */
  update(meanKl: number, nSteps: number): void;
}

export class FixedKlController implements KlController {
  readonly kind = "fixed" as const;
  constructor(private readonly beta: number) {
    if (!(beta >= 0)) throw new InvalidArgumentError("ppo.klCoef", `must be >= 0, got ${beta}`);
  }
  value(): number {
    return this.beta;
  }
  update(): void {}
}

/** beta <- beta * (1 + clip((KL - target)/target, -0.2, 0.2) * n/horizon). */
export class AdaptiveKlController implements KlController {
  readonly kind = "adaptive" as const;
  private beta: number;
  constructor(init: number, private readonly target: number, private readonly horizon: number) {
    if (!(init >= 0)) throw new InvalidArgumentError("ppo.klCoef", `must be >= 0, got ${init}`);
    if (!(target > 0)) throw new InvalidArgumentError("ppo.klTarget", `must be > 0, got ${target}`);
    if (!(horizon > 0)) throw new InvalidArgumentError("ppo.klHorizon", `must be > 0, got ${horizon}`);
    this.beta = init;
  }
  value(): number {
    return this.beta;
  }
  update(meanKl: number, nSteps: number): void {
    const err = Math.max(-0.2, Math.min(0.2, meanKl / this.target - 1));
    this.beta *= 1 + (err * nSteps) / this.horizon;
  }
}

export interface KlControlConfig {
  klControl: "fixed" | "adaptive";
  klCoef: number;
  klTarget?: number;
  klHorizon?: number;
}

export function createKlController(cfg: KlControlConfig, ctx: DpContext): KlController {
  if (cfg.klControl === "fixed") return new FixedKlController(cfg.klCoef);
  if (cfg.klControl === "adaptive") {
    if (ctx.dp) {
      throw new InvalidArgumentError(
        "ppo.klControl",
        "\"adaptive\" is driven by the batch KL and couples examples; it is refused in DP mode (DESIGN.md rule 2). Use \"fixed\"",
      );
    }
    return new AdaptiveKlController(cfg.klCoef, cfg.klTarget ?? 6, cfg.klHorizon ?? 10000);
  }
  throw new InvalidArgumentError("ppo.klControl", `unknown controller ${String(cfg.klControl)}; supported: fixed, adaptive`);
}
