/**
 * This VM's free-page reporting, switched off for a QEMU benchmark's run. The guest kernel
 * reports free memory to the hypervisor, which takes it away; the first touch of such memory
 * then costs several times more (bench/page_reporting.ts measures it). A transfer that
 * allocates its destination as it goes (qemu-recv's new files, a fresh QEMU destination's
 * RAM) then ran at the hypervisor's whim: `warmFreeMemory` (bench/qemu.ts) narrowed that, and
 * yet a fresh QEMU destination ran at 1.1 to 2.6 GB/s within one run (2026-12-03T06-58-08).
 * With reporting off, freed memory stays the guest's, as on a host without a hypervisor, and
 * every run allocates alike. The order is restored when the benchmark ends (exit, Ctrl-C);
 * env `ZC_BENCH_PAGE_REPORTING=keep` leaves it alone.
 * @module
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { native } from "../../ffi/mod.ts";
import { Region } from "../../src/region.ts";
import { err as note } from "../../util/output.ts";

const PARAMETERS = "/sys/module/page_reporting/parameters";
const ORDER_PATH = `${PARAMETERS}/page_reporting_order`;
/** Above the largest buddy order (10 on x86-64): no free block is large enough to be reported. */
const NEVER = 11;

/** Free-page reporting during a benchmark: whether it is off, and how to put it back. */
export interface PageReporting {
  /** True while this benchmark keeps reporting off (the free memory it leaves stays the guest's). */
  readonly suspended: boolean;
  /** For the report's header: "off for the run (order 9 restored at the end)", "on (order 9)", … */
  readonly description: string;
  /** Puts the order back (idempotent). */
  restore(): void;
}

/** A page_reporting parameter of this kernel (`page_reporting_order`, `reported_kib`, …), or undefined where it has none. */
export function pageReportingParameter(name: string): string | undefined {
  const path = `${PARAMETERS}/${name}`;
  return existsSync(path) ? readFileSync(path, "utf8").trim() : undefined;
}

/** Reporting as this benchmark found it, before it tried to switch it off. */
export const UNCHANGED: PageReporting = { suspended: false, description: "not changed", restore() {} };

/** Switches reporting off until {@link PageReporting.restore} (needs root; else left as it is). */
export function suspendPageReporting(): PageReporting {
  const order = pageReportingParameter("page_reporting_order");
  if (order === undefined) return left("none on this kernel");
  if (process.env.ZC_BENCH_PAGE_REPORTING === "keep") return left(`on (order ${order}; ZC_BENCH_PAGE_REPORTING=keep)`);
  if (Number(order) >= NEVER) return left(`off already (order ${order})`, true);
  try {
    writeFileSync(ORDER_PATH, String(NEVER));
  } catch (error) {
    return left(`on (order ${order}; could not switch it off: ${(error as Error).message})`);
  }
  let restored = false;
  return {
    suspended: true,
    description: `off for the run (order ${order} restored at the end)`,
    restore() {
      if (restored) return;
      restored = true;
      try {
        writeFileSync(ORDER_PATH, order);
      } catch (error) {
        // At exit: say so, and let the rest of the clean-up run.
        note(`could not restore ${ORDER_PATH} to ${order}: ${(error as Error).message}`);
      }
    },
  };
}

/** Reporting left as it is: off only if it was off already. */
function left(description: string, suspended = false): PageReporting {
  return { suspended, description, restore() {} };
}

/** What {@link touchFreeMemory} leaves untouched: room for the kernel and the benchmark's processes. */
const TOUCH_MARGIN_BYTES = 2 * 2 ** 30;
const TOUCH_STEP_BYTES = 2 ** 30;

/**
 * Touches (allocates, zeroes) nearly all free memory once and frees it again, so that with
 * reporting off every page a run allocates is memory the guest has touched. Memory reported
 * before the benchmark started stays the hypervisor's until its first touch, which costs
 * several times an ordinary page's zeroing: without this, whichever run got such pages lost
 * (`perf` put a slow qemu-recv's page zeroing at twice a QEMU destination's in the same round,
 * 2026-12-03). Takes about a minute (the hypervisor's faults: between benchmarks reporting is
 * on, so most free memory has been reported again). Returns the bytes touched.
 */
export async function touchFreeMemory(): Promise<number> {
  const match = /^MemFree:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"));
  const bytes = Math.floor(((match ? Number(match[1]) * 1024 : 0) - TOUCH_MARGIN_BYTES) / TOUCH_STEP_BYTES) *
    TOUCH_STEP_BYTES;
  if (bytes <= 0) return 0;
  const region = Region.allocate(bytes, { hugePages: true });
  try {
    // One madvise(MADV_POPULATE_WRITE) per GiB: the kernel allocates and zeroes each page.
    for (let offset = 0; offset < bytes; offset += TOUCH_STEP_BYTES) {
      const rc = native.zc_prefault(region.address + offset, TOUCH_STEP_BYTES, 1);
      if (rc < 0) throw new Error(`touching free memory: madvise(MADV_POPULATE_WRITE) failed: errno ${-rc}`);
    }
  } finally {
    await region.close();
  }
  return bytes;
}
