/**
 * CPU time of this process, for results that report what a transfer cost (the CLI's
 * `--json`, the benchmarks). Runtime-neutral: `node:process` under Deno and Bun.
 * @module
 */
import process from "node:process";

/** This process's user + system CPU seconds so far, every thread (the channel Workers too), µs resolution. */
export function processCpuSeconds(): number {
  return processCpuTimes().total;
}

/** {@link processCpuSeconds} and its system (kernel) part, from one sample. */
export function processCpuTimes(): { total: number; system: number } {
  const usage = process.cpuUsage();
  return { total: (usage.user + usage.system) / 1e6, system: usage.system / 1e6 };
}
