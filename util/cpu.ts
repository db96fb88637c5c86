/**
 * CPU time of this process, for results that report what a transfer cost (the CLI's
 * `--json`, the benchmarks). Runtime-neutral: `node:process` under Deno and Bun.
 * @module
 */
import process from "node:process";

/** This process's user + system CPU seconds so far, every thread (the channel Workers too), µs resolution. */
export function processCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** The system (kernel) part of {@link processCpuSeconds}. */
export function processSystemCpuSeconds(): number {
  return process.cpuUsage().system / 1e6;
}
