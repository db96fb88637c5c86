/**
 * Processes for the benchmarks: the runtimes' command lines, child processes that speak
 * JSON lines on stdout, and what /proc says about a process (CPU time, peak RSS).
 * Runtime-neutral (node:* APIs only), so every driver runs under Deno and Bun alike.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The repository root (bench/lib/../..). */
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export type Runtime = "deno" | "bun";
export const RUNTIMES: readonly Runtime[] = ["deno", "bun"];

/** The runtime running this process. */
export const currentRuntime: Runtime = "Bun" in globalThis ? "bun" : "deno";

/** The runtime's binary: the project's pinned one (node_modules/.bin), else the one on PATH. */
export function runtimeBinary(runtime: Runtime): string {
  const pinned = `${ROOT}node_modules/.bin/${runtime}`;
  return existsSync(pinned) ? pinned : runtime;
}

/** argv that runs a bench script (path relative to bench/) under `runtime`. */
export function scriptArgv(runtime: Runtime, script: string, args: string[] = []): string[] {
  const path = fileURLToPath(new URL(`../${script}`, import.meta.url));
  return runtime === "deno"
    ? [runtimeBinary("deno"), "run", "-A", path, ...args]
    : [runtimeBinary("bun"), path, ...args];
}

// Synchronous line output (JSON lines must not interleave or get lost), as the CLI does.
import { err as note, out } from "../../examples/cli_util.ts";
export { note, out };

/**
 * A child process whose stdout is a sequence of lines (JSON objects, for the bench
 * programs). Lines are queued and taken in order with {@link nextLine}; stderr is kept
 * (the last 8 KiB) for error messages.
 */
export class LineChild {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  #lines: string[] = [];
  #partial = "";
  #waiters: { resolve: (line: string) => void; reject: (error: Error) => void }[] = [];
  #stderr = "";
  #ended = false;
  readonly #label: string;

  constructor(argv: string[], options: { env?: Record<string, string>; label?: string } = {}) {
    this.#label = options.label ?? argv.slice(0, 3).join(" ");
    this.process = spawn(argv[0], argv.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...options.env },
    });
    this.process.stdout!.setEncoding("utf8");
    this.process.stdout!.on("data", (chunk: string) => {
      const parts = (this.#partial + chunk).split("\n");
      this.#partial = parts.pop()!;
      for (const line of parts) this.#push(line);
    });
    this.process.stderr!.setEncoding("utf8");
    this.process.stderr!.on("data", (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-8192);
    });
    this.exited = new Promise((resolve) => {
      this.process.on("error", (error) => {
        this.#stderr += `\nspawn failed: ${error.message}`;
        this.#end();
        resolve({ code: -1, signal: null });
      });
      this.process.on("close", (code, signal) => {
        if (this.#partial) this.#push(this.#partial), (this.#partial = "");
        this.#end();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  /** What the child wrote on stderr (its tail). */
  get stderr(): string {
    return this.#stderr.trim();
  }

  /** The next stdout line; rejects when the child exits first or after `timeoutMs`. */
  nextLine(timeoutMs = 120_000): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#ended) return Promise.reject(this.#error("exited without output"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        reject(this.#error(`no output for ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (line: string) => (clearTimeout(timer), resolve(line));
      this.#waiters.push({ resolve: done, reject: (e) => (clearTimeout(timer), reject(e)) });
    });
  }

  /** The next stdout line that parses as a JSON object (other lines are skipped). */
  async nextJson<T = Record<string, unknown>>(timeoutMs = 120_000): Promise<T> {
    for (;;) {
      const line = await this.nextLine(timeoutMs);
      if (!line.startsWith("{")) continue;
      const value = JSON.parse(line);
      if (typeof value.error === "string") throw this.#error(value.error);
      return value as T;
    }
  }

  /** Kills the child (SIGKILL) unless it has exited; waits for it. */
  async kill(): Promise<void> {
    if (!this.#ended) this.process.kill("SIGKILL");
    await this.exited;
  }

  #push(line: string): void {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(line);
    else this.#lines.push(line);
  }

  #end(): void {
    this.#ended = true;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#error("exited without output"));
  }

  #error(what: string): Error {
    const tail = this.stderr ? `: ${this.stderr.split("\n").slice(-6).join(" | ")}` : "";
    return new Error(`${this.#label} ${what}${tail}`);
  }
}

/** Runs argv to completion; resolves with its last stdout JSON object. */
export async function runJson<T = Record<string, unknown>>(
  argv: string[],
  options: { env?: Record<string, string>; label?: string; timeoutMs?: number } = {},
): Promise<T> {
  const child = new LineChild(argv, options);
  let last: T | undefined;
  try {
    for (;;) {
      let line: string;
      try {
        line = await child.nextLine(options.timeoutMs ?? 600_000);
      } catch (error) {
        if (last !== undefined) break;
        throw error;
      }
      if (!line.startsWith("{")) continue;
      const value = JSON.parse(line);
      if (typeof value.error === "string") throw new Error(`${options.label ?? argv[0]}: ${value.error}`);
      last = value;
    }
  } finally {
    await child.kill();
  }
  const { code } = await child.exited;
  if (code !== 0) throw new Error(`${options.label ?? argv[0]} exited with ${code}: ${child.stderr.slice(-600)}`);
  return last!;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux x86-64

/** User + system CPU seconds of process `pid` (every thread, also exited ones), 10 ms ticks. */
export function cpuSecondsOf(pid: number | "self"): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Peak resident set size (VmHWM) of process `pid`, KiB; -1 when unreadable. */
export function peakRssKiB(pid: number | "self" = "self"): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : -1;
  } catch {
    return -1;
  }
}

/** This process's CPU seconds (all threads), µs resolution. */
export function processCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/**
 * Runs a bench script's `main` and exits with its status. An uncaught error exits 1 with
 * its stack on stderr and, given `errorRecord`, also as an `{"error"}` JSON line on stdout,
 * which a driver reading the script's JSON lines (run.ts, multifd.ts) records as the error.
 */
export async function runMain(
  script: string,
  main: () => Promise<number>,
  errorRecord?: (error: Error) => string,
): Promise<never> {
  try {
    process.exit(await main());
  } catch (error) {
    if (errorRecord) out(JSON.stringify({ error: errorRecord(error as Error) }));
    note(`${script}: ${(error as Error).stack ?? error}`);
    process.exit(1);
  }
}

/** Waits until process `pid` has used no CPU for `quietMs` (at most `limitMs`): start-up work is over. */
export async function settle(pids: number[], quietMs = 100, limitMs = 3000): Promise<void> {
  const started = performance.now();
  let last = pids.map((pid) => cpuSecondsOf(pid));
  while (performance.now() - started < limitMs) {
    await new Promise((resolve) => setTimeout(resolve, quietMs));
    const now = pids.map((pid) => cpuSecondsOf(pid));
    if (now.every((value, i) => value === last[i])) return;
    last = now;
  }
}
