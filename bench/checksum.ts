/**
 * The region checksum's two MACs (src/multifd/checksum.ts), one core, GB/s over a 1 GiB
 * region already in memory, in each build of the native library that this CPU runs (the
 * x86-64-v3 build uses AES instructions; the baseline build's AES is software). Builds and
 * algorithms interleaved, each repetition in a fresh process.
 *
 *   deno run -A bench/checksum.ts [--reps 5] [--size-mib 1024]
 *
 * Prints one JSON line per measurement, then one per build and algorithm with the median.
 * @module
 */
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { cpuIsX86_64V3, LIBRARY_ENV } from "../ffi/library_path.ts";
import { blockCount, CHECKSUM_ALGORITHM_IDS, type ChecksumAlgorithm, hashBlocks } from "../src/multifd/checksum.ts";
import { createSharedState } from "../src/multifd/shared_state.ts";
import { runJson } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { spread } from "./lib/report.ts";

const ALGORITHMS = Object.keys(CHECKSUM_ALGORITHM_IDS) as ChecksumAlgorithm[];

/** In the child (its native library the one LIBRARY_ENV names): MAC `size` bytes with `algorithm`. */
async function measure(algorithm: ChecksumAlgorithm, size: number): Promise<number> {
  const { Region } = await import("../mod.ts");
  const region = Region.allocate(size);
  region.view().fill(0x5a); // faulted in: the MAC alone is timed
  const blocks = Array.from({ length: blockCount(size) }, (_, i) => i);
  const started = performance.now();
  hashBlocks(region.descriptor, blocks, new Uint8Array(32), algorithm, createSharedState(1));
  const seconds = (performance.now() - started) / 1000;
  await region.close();
  out(JSON.stringify({ bench: "checksum", algorithm, GBps: round(size / 1e9 / seconds) }));
  return 0;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      reps: { type: "string", default: "5" },
      "size-mib": { type: "string", default: "1024" },
      measure: { type: "string" },
    },
    strict: true,
  });
  const size = Number(values["size-mib"]) * 2 ** 20;
  if (values.measure) return await measure(values.measure as ChecksumAlgorithm, size);
  const lib = (file: string) => fileURLToPath(new URL(`../zig-out/lib/${file}`, import.meta.url));
  const builds = [["baseline", lib("libzerocopy_multifd.so")]];
  if (cpuIsX86_64V3()) builds.push(["x86-64-v3", lib("libzerocopy_multifd_x86_64_v3.so")]);
  const records: Record<string, string | number>[] = [];
  for (let rep = 0; rep < Number(values.reps); rep++) {
    for (const [build, path] of rep % 2 ? [...builds].reverse() : builds) {
      for (const algorithm of ALGORITHMS) {
        const argv = ["env", `${LIBRARY_ENV}=${path}`, ...runtimeArgv(fileURLToPath(import.meta.url), [])];
        argv.push("--measure", algorithm, "--size-mib", String(values["size-mib"]));
        const record = { ...await runJson<Record<string, string | number>>(argv), build, rep };
        records.push(record);
        out(JSON.stringify(record));
      }
    }
  }
  for (const [build] of builds) {
    for (const algorithm of ALGORITHMS) {
      const mine = records.filter((r) => r.build === build && r.algorithm === algorithm).map((r) => Number(r.GBps));
      out(JSON.stringify({ bench: "checksum-summary", build, algorithm, GBps: spread(mine) }));
    }
  }
  return 0;
}

await runMain("checksum", main);
