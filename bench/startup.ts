/**
 * What a runtime's start adds before the first byte of a transfer made from a new process
 * (`migrate.ts qemu-send`, `send`): importing the native library (`ffi/mod.ts`), importing
 * the whole module (`mod.ts`), and starting four channel Workers until each is ready; and, for
 * scale, four Workers that import nothing (the runtime's own share). Each
 * repetition is a fresh process per runtime, runtimes interleaved (deno, bun, bun, deno, …).
 *
 *   deno run -A bench/startup.ts [--reps 10] [--runtimes deno,bun]
 *
 * The measured process is startup_child.ts. Prints one JSON line per process, then one per
 * runtime with the medians (ms).
 * @module
 */
import { parseArgs } from "node:util";
import { runJson } from "../dev/child.ts";
import { type Runtime, RUNTIMES, scriptArgv } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { spread } from "./lib/report.ts";

const PHASES = ["ffiMs", "moduleMs", "workersMs", "emptyWorkersMs"] as const;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      reps: { type: "string", default: "10" },
      runtimes: { type: "string", default: RUNTIMES.join(",") },
    },
    strict: true,
  });
  const runtimes = values.runtimes.split(",") as Runtime[];
  const records: Record<string, number | string>[] = [];
  for (let rep = 0; rep < Number(values.reps); rep++) {
    for (const runtime of rep % 2 ? [...runtimes].reverse() : runtimes) {
      const record = await runJson<Record<string, number | string>>(
        scriptArgv(runtime, new URL("./startup_child.ts", import.meta.url)),
      );
      records.push(record);
      out(JSON.stringify(record));
    }
  }
  for (const runtime of runtimes) {
    const mine = records.filter((r) => r.runtime === runtime);
    const medians = Object.fromEntries(
      PHASES.map((phase) => [phase, round(spread(mine.map((r) => Number(r[phase])))?.median ?? NaN)]),
    );
    out(JSON.stringify({ bench: "startup-summary", runtime, workers: 4, reps: mine.length, ...medians }));
  }
  return 0;
}

await runMain("startup", main);
