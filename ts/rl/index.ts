export { klShapedRewards, type Rows, type ShapedRewards } from "./rewards.js";
export { gae, discountedReturns, type Advantages } from "./gae.js";
export { whiten, normalizeScores, assertNoBatchCoupling, WHITEN_MODES, REWARD_NORM_MODES, type WhitenMode, type RewardNormMode, type DpContext } from "./normalize.js";
export { createKlController, FixedKlController, AdaptiveKlController, type KlController, type KlControlConfig } from "./kl-control.js";
