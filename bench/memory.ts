/**
 * Memory benchmark: does the module's memory grow with the region? The same multifd
 * transfer (4 channels, plain, 2 MiB pages) with a small and a large region, under each
 * runtime; each side's peak RSS minus the region is the module's own memory, and it must
 * not grow with the region. The fixed cost of a channel (each channel Worker is a JS
 * engine) comes from the multifd part: the slope of peak RSS over 1/2/4/8 channels.
 *
 *   deno run -A bench/memory.ts                  # 1 GiB and 8 GiB, both runtimes
 *   bun bench/memory.ts --sizes-mib 512,4096
 *
 * Both sides hold a whole region, in separate processes: 8 GiB needs ~17 GiB of RAM.
 * @module
 */
import { parseArgs } from "node:util";
import { runMultifdCase } from "./multifd.ts";
import { type Runtime, RUNTIMES } from "../dev/runtime.ts";
import { err as note, out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { type BenchRecord, environment, markdownReport, memorySummaries } from "./lib/report.ts";

export const MEMORY_CHANNELS = 4;
const MiB = 2 ** 20;

export interface MemoryOptions {
  sizesMiB: number[];
  runtimes: readonly Runtime[];
}

export const defaultMemoryOptions = (): MemoryOptions => ({ sizesMiB: [1024, 8192], runtimes: RUNTIMES });

/** One transfer per size and runtime, interleaved; every record goes to `emit`. */
export async function runMemorySuite(options: MemoryOptions, emit: (record: BenchRecord) => void): Promise<void> {
  for (const sizeMiB of options.sizesMiB) {
    for (const runtime of options.runtimes) {
      note(`memory: ${sizeMiB} MiB region, ${MEMORY_CHANNELS} channels, ${runtime}`);
      const config = { channels: MEMORY_CHANNELS, zerocopy: false, hugePages: true };
      try {
        const record = await runMultifdCase(runtime, config, sizeMiB * MiB);
        emit({
          ...record,
          bench: "memory",
          regionMiB: sizeMiB,
          senderOwnMiB: Number(record.senderPeakRssMiB) - sizeMiB,
          receiverOwnMiB: Number(record.receiverPeakRssMiB) - sizeMiB,
        });
      } catch (error) {
        emit({ bench: "memory", runtime, regionMiB: sizeMiB, ...config, error: (error as Error).message });
      }
    }
  }
}

async function main(): Promise<number> {
  const options = defaultMemoryOptions();
  try {
    const { values } = parseArgs({
      options: { "sizes-mib": { type: "string" }, runtimes: { type: "string" } },
      strict: true,
    });
    if (values["sizes-mib"]) options.sizesMiB = values["sizes-mib"].split(",").map(Number);
    if (values.runtimes) options.runtimes = values.runtimes.split(",") as Runtime[];
    if (!options.sizesMiB.every((s) => Number.isInteger(s) && s >= 16)) throw new Error("bad --sizes-mib");
    if (!options.runtimes.every((r) => RUNTIMES.includes(r))) throw new Error("bad --runtimes");
  } catch (error) {
    note(`memory.ts: ${(error as Error).message}\nusage: memory.ts [--sizes-mib 1024,8192] [--runtimes deno,bun]`);
    return 2;
  }
  const records: BenchRecord[] = [];
  await runMemorySuite(options, (record) => {
    records.push(record);
    out(JSON.stringify(record));
  });
  const sums = memorySummaries(records);
  for (const s of sums) out(JSON.stringify(s));
  out("\n" + markdownReport("Memory benchmark", environment(), sums));
  return records.some((r) => r.error !== undefined || r.verified === false) ? 1 : 0;
}

if (import.meta.main) await runMain("memory.ts", main);
