/**
 * What the commands of migrate.ts share: their two failures (a usage error: exit status 2;
 * a failure with a prepared one-line reason: 1), flag parsing, and the running command's
 * state — how Ctrl-C aborts it, the files removed when it fails or ends, its report.
 * @module
 */
import { unlinkSync } from "node:fs";
import process from "node:process";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { runtime, SEND_BUFFER_BYTES } from "../../mod.ts";
import { type HostPort, oneLine, parseHostPort, parseInteger, parseSize, statsRows, table } from "../cli_util.ts";
import { processCpuTimes } from "../../util/cpu.ts";
import { round } from "../../util/format.ts";
import { err, out } from "../../util/output.ts";

/** A command-line problem: usage on stderr, exit status 2. */
export class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
  }
}

/** A failure with a prepared one-line reason: exit status 1. */
export class Failure extends Error {}

/** A command's --help: its usage on stdout, exit status 0. */
export interface Help {
  kind: "help";
  text: string;
}

/** The running command, as main, the command and the signal handlers see it. */
export const state = {
  /** Set while a transfer runs: Ctrl-C aborts it (a second Ctrl-C exits at once). */
  abort: undefined as (() => Promise<void>) | undefined,
  interrupted: false,
  /** Files to remove when the command fails (partial output) or ends (generated secret). */
  cleanupOnFailure: [] as string[],
  cleanupAlways: [] as string[],
  /** Whether the result went out already (a --json caller then gets no second JSON line). */
  reported: false,
  /** CPU seconds of this process (every thread) when the command began. */
  cpuAtStart: 0,
};

/** A command's flags (and -h), strictly: anything else is a UsageError with the command's usage. */
export function parseFlags(args: string[], options: NonNullable<ParseArgsConfig["options"]>, usage: string) {
  try {
    const config = { args, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true } as const;
    return parseArgs(config).values as Record<string, string | boolean | undefined>;
  } catch (error) {
    throw new UsageError(oneLine((error as Error).message), usage);
  }
}

/** Runs `parse`; what it throws becomes a UsageError with `usage`. */
export function withUsage<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError((error as Error).message, usage);
  }
}

/** A flag's value as parseArgs gives it. */
type FlagValue = string | boolean | undefined;

/** --to HOST:PORT: required, and not port 0 (`peer`: whose port it must be, e.g. "a receiver's"). */
export function parseTo(value: FlagValue, peer: string): HostPort {
  if (typeof value !== "string") throw new Error("--to HOST:PORT is required");
  const to = parseHostPort(value, "--to");
  if (to.port === 0) throw new Error(`--to: port 0 is not ${peer} port`);
  return to;
}

/** --channels N within 1..`max`, or `fallback` when the flag is absent. */
export function parseChannels<T extends number | undefined>(value: FlagValue, max: number, fallback: T): number | T {
  return typeof value === "string" ? parseInteger(value, "--channels", 1, max) : fallback;
}

/** --send-buffer SIZE within what the channels accept, or undefined when the flag is absent. */
export function parseSendBuffer(value: FlagValue): number | undefined {
  if (typeof value !== "string") return undefined;
  const bytes = parseSize(value, "--send-buffer");
  if (bytes < SEND_BUFFER_BYTES.min || bytes > SEND_BUFFER_BYTES.max) {
    throw new Error(`--send-buffer must be ${SEND_BUFFER_BYTES.min} bytes to 1G, got ${bytes}`);
  }
  return bytes;
}

/** A file-name flag's value: undefined when absent, an error when empty. */
export function nonEmpty(value: FlagValue, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value === "") throw new Error(`${flag} needs a file name`);
  return value;
}

/** SIGINT and SIGTERM abort the running transfer; a second one (or one before a transfer) exits at once, 130. */
export function installSignalHandlers(): void {
  const onSignal = (signal: string) => {
    if (state.interrupted) {
      removeFiles(state.cleanupOnFailure), removeFiles(state.cleanupAlways);
      process.exit(130);
    }
    state.interrupted = true;
    err(`\n${signal}: aborting the transfer (again to exit at once)`);
    if (state.abort) {
      state.abort().catch(() => {});
    } else {
      removeFiles(state.cleanupOnFailure), removeFiles(state.cleanupAlways);
      process.exit(130);
    }
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
}

/** Removes `paths` (emptying the list), those already gone too. */
export function removeFiles(paths: string[]): void {
  for (const path of paths.splice(0)) {
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  }
}

/**
 * What the process spent, for --json: `cpuSeconds` since the command began (what a transfer
 * cost), `processCpuSeconds` since the process started (runtime start-up too), so that a caller
 * that read the process's CPU at some moment (e.g. from /proc when it starts a migration) can
 * tell what came after it; `processSystemCpuSeconds`, the kernel's part of that.
 */
const cpuFields = () => {
  const { total, system } = processCpuTimes();
  return {
    cpuSeconds: round(total - state.cpuAtStart),
    processCpuSeconds: round(total),
    processSystemCpuSeconds: round(system),
  };
};

/** A command's result as --json prints it: one JSON line, what the process spent at its end. */
export function printResult(role: string, ok: boolean, fields: Record<string, unknown>): void {
  state.reported = true;
  out(JSON.stringify({ role, runtime, ok, ...fields, ...cpuFields() }));
}

/** The result of recv or send: one JSON line with --json, else a stats table. */
export function report(role: "send" | "recv", json: boolean, result: Record<string, unknown>, ok: boolean): void {
  if (json) printResult(role, ok, result);
  else out(table(["", role === "send" ? "sender" : "receiver"], statsRows([result])));
}
