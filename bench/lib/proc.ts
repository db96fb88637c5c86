/**
 * What /proc says about a process (CPU time, peak RSS), and how a bench script runs its
 * `main`. Runtime-neutral (node:* APIs only), so every driver runs under Deno and Bun
 * alike. Runtimes and command lines: dev/runtime.ts; child processes: dev/child.ts.
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { err as note, out } from "../../util/output.ts";

const TICKS_PER_SECOND = 100; // USER_HZ on Linux x86-64

/** User + system CPU seconds of process `pid` (every thread, also exited ones), 10 ms ticks. */
export function cpuSecondsOf(pid: number | "self"): number {
  return cpuTimesOf(pid).total;
}

/** {@link cpuSecondsOf} and its system (kernel) part, from one read of /proc. */
export function cpuTimesOf(pid: number | "self"): CpuTimes {
  return statCpuTimes(readFileSync(`/proc/${pid}/stat`, "utf8"));
}

/** CPU seconds: user + system, and the system (kernel) part. */
export interface CpuTimes {
  total: number;
  system: number;
}

/** User + system CPU seconds in the text of a /proc `stat` file (a process's or one thread's). */
export function statCpuSeconds(stat: string): number {
  return statCpuTimes(stat).total;
}

/** {@link statCpuSeconds} and its system (kernel) part. */
function statCpuTimes(stat: string): CpuTimes {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const system = Number(fields[12]);
  return { total: (Number(fields[11]) + system) / TICKS_PER_SECOND, system: system / TICKS_PER_SECOND };
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

/**
 * Runs a bench script's `main` and exits with its status. A bad command line (parseArgs'
 * errors) exits 2 with its one-line message; any other uncaught error exits 1 with its
 * stack on stderr and, given `errorRecord`, also as an `{"error"}` JSON line on stdout,
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
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
      note(`${script}: ${(error as Error).message} (the script's header comment lists its options)`);
      process.exit(2);
    }
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
