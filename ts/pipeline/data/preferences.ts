/**
 * Preference-pair loaders for the RLHF scenario: Anthropic HH-RLHF, OpenAI summarize-from-feedback
 * comparisons (Reddit TL;DR) and generic `{prompt, chosen, rejected}` JSON lines (TRL's format).
 * Each reads `.jsonl` or `.jsonl.gz` through readJsonl and returns one record type, PreferencePair.
 *
 * Two kinds of bad records:
 * - malformed (not JSON, not UTF-8, a missing or mistyped field, a duplicate id): the file is
 *   refused as a whole with `file:line: problem` (readJsonl lists up to 5), as for IMDb;
 * - well-formed records that are not a usable pair (SkipReason: HH transcripts that do not share
 *   their prompt or lack a turn, two identical responses, a CNN/DM comparison among the TL;DR
 *   ones): skipped and returned in `skipped` with file, line, reason and detail, so the caller
 *   reports the count (describeSkips). Real data has a few of these (5 of the 2,312 harmless-base
 *   test pairs of HH-RLHF; see the README), and refusing the file for them would make it unusable.
 *   `strict: true` turns them into malformed records (the file is refused).
 *
 * Conventions: responses are trimmed; a prompt ends where the response starts (HH: with
 * "\n\nAssistant:", TL;DR: with "TL;DR:"), and pairText joins the two with one space.
 */
import { basename } from "node:path";
import { readJsonl, type RecordValidator } from "./jsonl.js";
import { checkOpenAiComparison, tldrPrompt } from "./tldr.js";

export type PreferenceSource = "hh-rlhf" | "openai-sff" | "jsonl";

export interface PreferencePair {
  /** hh-rlhf/<file stem>/<line>, openai-sff/<file stem>/<line>, or the record's own id (else jsonl/<file stem>/<line>). */
  id: string;
  prompt: string;
  /** The preferred response (trimmed). */
  chosen: string;
  /** The other response (trimmed). */
  rejected: string;
  /** A reference response (generic JSON lines with a `reference` field). */
  reference?: string;
  source: PreferenceSource;
  /** openai-sff: the Reddit post (`info.id`); pairs on one post must stay in one data set. */
  postId?: string;
  /** openai-sff: `split` (train, valid1, valid2), `batch` and the labeller (`worker`), as published. */
  split?: string;
  batch?: string;
  worker?: string;
}

export type SkipReason = "no-assistant-turn" | "no-human-turn" | "no-shared-prefix" | "identical-responses" | "not-reddit";

export interface SkippedRecord {
  file: string;
  line: number;
  reason: SkipReason;
  detail: string;
}

export interface PreferenceLoad {
  file: string;
  pairs: PreferencePair[];
  /** Well-formed records that are not a usable pair, in file order. */
  skipped: SkippedRecord[];
}

export interface PreferenceLoadOptions {
  /** Refuse the file (naming each record) instead of skipping records that are not a usable pair. */
  strict?: boolean;
  /** Stop after this many records (pairs and skipped ones together). */
  limit?: number;
}

export type PreferenceFormat = PreferenceSource;
export const PREFERENCE_FORMATS: readonly PreferenceFormat[] = ["hh-rlhf", "openai-sff", "jsonl"];

/** `<stem>` of `<dir>/<stem>.jsonl.gz` (also .jsonl, .json, .json.gz). */
export function fileStem(file: string): string {
  return basename(file).replace(/\.jsonl?(\.gz)?$/, "");
}

/** Prompt and response as one text: joined by one space unless the prompt already ends with whitespace. */
export function pairText(prompt: string, response: string): string {
  return prompt === "" || /\s$/.test(prompt) ? prompt + response : `${prompt} ${response}`;
}

export const HH_ASSISTANT = "\n\nAssistant:";
export const HH_HUMAN = "\n\nHuman:";

/** What splitHhTranscripts gives for a pair it cannot split. */
export interface HhSplitProblem {
  reason: Exclude<SkipReason, "not-reddit">;
  detail: string;
}

/**
 * Splits two HH-RLHF transcripts into the shared prompt (everything through the last
 * "\n\nAssistant:", kept verbatim) and the two final responses (trimmed). A problem when either
 * lacks an Assistant turn, the prompt lacks a Human turn, the prompts differ, or the responses
 * are identical. An empty response is kept (the real data has a few chosen ones).
 */
export function splitHhTranscripts(chosen: string, rejected: string): { prompt: string; chosen: string; rejected: string } | HhSplitProblem {
  const ic = chosen.lastIndexOf(HH_ASSISTANT);
  const ir = rejected.lastIndexOf(HH_ASSISTANT);
  if (ic < 0 || ir < 0) {
    const which = ic < 0 && ir < 0 ? "neither transcript has" : ic < 0 ? "the chosen transcript has no" : "the rejected transcript has no";
    return { reason: "no-assistant-turn", detail: `${which} an "\\n\\nAssistant:" turn` };
  }
  const prompt = chosen.slice(0, ic + HH_ASSISTANT.length);
  const other = rejected.slice(0, ir + HH_ASSISTANT.length);
  if (prompt !== other) {
    let d = 0;
    while (d < prompt.length && d < other.length && prompt[d] === other[d]) d++;
    const where =
      d === other.length ? `the rejected prompt (${other.length} characters) is the start of the chosen one (${prompt.length}): the chosen transcript has more turns`
      : d === prompt.length ? `the chosen prompt (${prompt.length} characters) is the start of the rejected one (${other.length}): the rejected transcript has more turns`
      : `the prompts (${prompt.length} and ${other.length} characters) differ from character ${d}`;
    return { reason: "no-shared-prefix", detail: `chosen and rejected differ before their last "\\n\\nAssistant:" turn; ${where}` };
  }
  if (!prompt.includes(HH_HUMAN)) return { reason: "no-human-turn", detail: 'the prompt has no "\\n\\nHuman:" turn' };
  const c = chosen.slice(ic + HH_ASSISTANT.length).trim();
  const r = rejected.slice(ir + HH_ASSISTANT.length).trim();
  if (c === r) return { reason: "identical-responses", detail: "the chosen and rejected responses are identical" };
  return { prompt, chosen: c, rejected: r };
}

type Item = { pair: PreferencePair } | { skip: SkippedRecord };


async function load(file: string, opts: PreferenceLoadOptions, check: (file: string) => RecordValidator<PreferencePair | Omit<SkippedRecord, "file" | "line">>): Promise<PreferenceLoad> {
  const inner = check(file);
  const validator: RecordValidator<Item> = ((value, line) => {
    const r = inner(value, line);
    if (typeof r === "string") return r;
    if ("source" in r) return { pair: r };
    if (opts.strict) return `${r.reason}: ${r.detail}`;
    return { skip: { file, line, ...r } };
  });
  const items = await readJsonl(file, validator, opts.limit ?? Infinity);
  const out: PreferenceLoad = { file, pairs: [], skipped: [] };
  for (const it of items) {
    if ("pair" in it) out.pairs.push(it.pair);
    else out.skipped.push(it.skip);
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Anthropic HH-RLHF: `{chosen, rejected}` transcripts per line; ids hh-rlhf/<file stem>/<line>. */
export function loadHhRlhf(file: string, opts: PreferenceLoadOptions = {}): Promise<PreferenceLoad> {
  const stem = fileStem(file);
  return load(file, opts, () => (v, line) => {
    if (!isObject(v)) return "expected a JSON object";
    if (typeof v.chosen !== "string") return 'field "chosen" must be a string (a "\\n\\nHuman: ... \\n\\nAssistant: ..." transcript)';
    if (typeof v.rejected !== "string") return 'field "rejected" must be a string (a "\\n\\nHuman: ... \\n\\nAssistant: ..." transcript)';
    const s = splitHhTranscripts(v.chosen, v.rejected);
    if ("reason" in s) return s;
    return { id: `hh-rlhf/${stem}/${line}`, prompt: s.prompt, chosen: s.chosen, rejected: s.rejected, source: "hh-rlhf" };
  });
}

/**
 * OpenAI summarize-from-feedback comparisons (a published batch file, or the tldr/comparisons.jsonl.gz
 * that `dpalign data fetch tldr` writes): prompt = tldrPrompt(info), chosen = summaries[choice].text,
 * rejected = the other (both trimmed). CNN/DM comparisons are skipped (not-reddit).
 */
export function loadOpenAiComparisons(file: string, opts: PreferenceLoadOptions = {}): Promise<PreferenceLoad> {
  const stem = fileStem(file);
  return load(file, opts, () => (v, line) => {
    const c = checkOpenAiComparison(v);
    if (typeof c === "string") return c;
    if (c.kind === "other") return { reason: "not-reddit", detail: c.detail };
    const { info, summaries, choice } = c.comparison;
    const chosen = summaries[choice].text.trim();
    const rejected = summaries[1 - choice].text.trim();
    if (chosen === rejected) return { reason: "identical-responses", detail: "the two summaries are identical" };
    const pair: PreferencePair = { id: `openai-sff/${stem}/${line}`, prompt: tldrPrompt(info), chosen, rejected, source: "openai-sff", postId: info.id };
    for (const k of ["split", "batch", "worker"] as const) if (c.comparison[k] !== undefined) pair[k] = c.comparison[k];
    return pair;
  });
}

/**
 * Generic JSON lines `{prompt, chosen, rejected}` (strings; TRL's standard explicit-prompt format),
 * optional `id` (non-empty, unique in the file; else jsonl/<file stem>/<line>) and `reference`.
 * The prompt is kept verbatim, the responses trimmed.
 */
export function loadPreferenceJsonl(file: string, opts: PreferenceLoadOptions = {}): Promise<PreferenceLoad> {
  const stem = fileStem(file);
  return load(file, opts, () => {
    const seen = new Map<string, number>();
    return (v, line) => {
      if (!isObject(v)) return "expected a JSON object";
      if (v.prompt === undefined) return 'field "prompt" is missing (records without a prompt, TRL\'s implicit-prompt format, are not supported: give the shared prompt in "prompt")';
      for (const k of ["prompt", "chosen", "rejected"] as const) {
        if (Array.isArray(v[k])) return `field "${k}" is a list of messages (TRL's conversational format); give plain strings`;
        if (typeof v[k] !== "string") return `field "${k}" must be a string`;
      }
      if (v.reference !== undefined && typeof v.reference !== "string") return 'field "reference" must be a string';
      let id = `jsonl/${stem}/${line}`;
      if (v.id !== undefined) {
        if (typeof v.id !== "string" || v.id.length === 0) return 'field "id" must be a non-empty string';
        const first = seen.get(v.id);
        if (first !== undefined) return `duplicate id "${v.id}" (first on line ${first})`;
        seen.set(v.id, line);
        id = v.id;
      }
      const chosen = (v.chosen as string).trim();
      const rejected = (v.rejected as string).trim();
      if (chosen === rejected) return { reason: "identical-responses", detail: "the chosen and rejected responses are identical" };
      const pair: PreferencePair = { id, prompt: v.prompt as string, chosen, rejected, source: "jsonl" };
      if (typeof v.reference === "string") pair.reference = v.reference;
      return pair;
    };
  });
}

/** The loader of a format. */
export function loadPreferences(format: PreferenceFormat, file: string, opts: PreferenceLoadOptions = {}): Promise<PreferenceLoad> {
  switch (format) {
    case "hh-rlhf": return loadHhRlhf(file, opts);
    case "openai-sff": return loadOpenAiComparisons(file, opts);
    case "jsonl": return loadPreferenceJsonl(file, opts);
  }
}

/**
 * One line for a run log: `<file>: N pairs; M records skipped (k reason: lines a, b, ...; ...)`
 * (up to 10 lines named per reason).
 */
export function describeSkips(l: PreferenceLoad): string {
  const head = `${l.file}: ${l.pairs.length} pair${l.pairs.length === 1 ? "" : "s"}`;
  if (l.skipped.length === 0) return `${head}; no record skipped`;
  const by = new Map<SkipReason, number[]>();
  for (const s of l.skipped) {
    const lines = by.get(s.reason);
    if (lines) lines.push(s.line);
    else by.set(s.reason, [s.line]);
  }
  const parts = [...by].map(([reason, lines]) => `${lines.length} ${reason}: line${lines.length === 1 ? "" : "s"} ${lines.slice(0, 10).join(", ")}${lines.length > 10 ? `, ... (${lines.length - 10} more)` : ""}`);
  return `${head}; ${l.skipped.length} record${l.skipped.length === 1 ? "" : "s"} skipped (${parts.join("; ")})`;
}
