/**
 * What this VM's free-page reporting costs a transfer that allocates its destination as it
 * goes (qemu-recv's new files, a fresh QEMU destination's RAM): a file of `--mib` MiB is
 * written to a tmpfs, deleted, and after a wait written again, round after round. The guest
 * kernel reports free memory to the hypervisor (`page_reporting`: free blocks of
 * 2^page_reporting_order pages, a while after they were freed), which then takes it away: the
 * next first touch of that memory faults into the hypervisor and costs several times more.
 * Compare with reporting off (root; the largest buddy order is 10, so 11 reports nothing):
 *
 *   deno run -A bench/page_reporting.ts [--mib 2048] [--rounds 6] [--waits-ms 0,3000] [--dir /dev/shm]
 *   echo 11 > /sys/module/page_reporting/parameters/page_reporting_order   # then run it again,
 *   # and put back the order the first run printed
 *
 * Prints one JSON line per write: GB/s, the wait after the previous delete, and the memory the
 * kernel reported to the hypervisor during that wait (`reported_kib`, where this kernel has
 * it). The first write may meet memory reported long ago; the waits alternate over the rounds.
 * bench/qemu.ts's `warmFreeMemory` is the benchmarks' answer (bench/README.md).
 * @module
 */
import { closeSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { round } from "../util/format.ts";
import { err as note, out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { pageReportingParameter } from "./lib/page_reporting.ts";

const CHUNK_BYTES = 8 << 20;

function reportedKiB(): number {
  return Number(pageReportingParameter("reported_kib") ?? NaN);
}

/** Writes `bytes` of new file at `path` (every page allocated now); returns the seconds it took. */
function writeFile(path: string, bytes: number, chunk: Uint8Array): number {
  const started = performance.now();
  const fd = openSync(path, "w");
  try {
    for (let offset = 0; offset < bytes; offset += chunk.length) {
      writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - offset));
    }
  } finally {
    closeSync(fd);
  }
  return (performance.now() - started) / 1000;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      mib: { type: "string", default: "2048" },
      rounds: { type: "string", default: "6" },
      "waits-ms": { type: "string", default: "0,3000" },
      dir: { type: "string", default: "/dev/shm" },
    },
    strict: true,
  });
  const bytes = Number(values.mib) * 2 ** 20;
  const rounds = Number(values.rounds);
  const waits = values["waits-ms"].split(",").map(Number);
  if (!(bytes > 0) || !(rounds >= 1) || waits.some((w) => !(w >= 0))) {
    throw new Error("--mib, --rounds: positive numbers; --waits-ms: milliseconds, comma-separated");
  }
  const order = pageReportingParameter("page_reporting_order");
  note(`page_reporting: order ${order ?? "(no page_reporting on this kernel)"}, reported so far ${reportedKiB()} KiB`);
  const path = join(values.dir, `page-reporting-${process.pid}.bin`);
  const chunk = new Uint8Array(CHUNK_BYTES).fill(1);
  try {
    let wait = 0;
    for (let i = 0; i < rounds; i++) {
      const reportedBefore = reportedKiB();
      await new Promise((resolve) => setTimeout(resolve, wait));
      const reportedMiB = (reportedKiB() - reportedBefore) / 1024;
      const seconds = writeFile(path, bytes, chunk);
      rmSync(path);
      out(JSON.stringify({
        bench: "page-reporting",
        round: i,
        pageReportingOrder: order === undefined ? null : Number(order),
        mib: Number(values.mib),
        waitMs: i === 0 ? null : wait,
        reportedDuringWaitMiB: i === 0 || Number.isNaN(reportedMiB) ? null : round(reportedMiB, 0),
        seconds: round(seconds, 3),
        GBps: round(bytes / seconds / 1e9, 2),
      }));
      wait = waits[i % waits.length];
    }
  } finally {
    rmSync(path, { force: true });
  }
  return 0;
}

await runMain("page_reporting.ts", main);
