/**
 * What the sender's zero-page scan costs per page (src/multifd/packet.ts `PageScan.splitZero`,
 * zig/pages.zig `zc_split_zero_pages`) over a region of random data far larger than the
 * caches, as a transfer meets it: each page's first line comes from memory. A packet's worth
 * of pages per call, in order, over the whole region; one pass warms up, the others are timed.
 *
 *   deno run -A bench/zero_scan.ts [--size-mib 2048] [--passes 6]
 *   bun bench/zero_scan.ts
 *   ZEROCOPY_MULTIFD_LIB=<another build's .so> deno run -A bench/zero_scan.ts   # another build, same program
 *
 * One JSON line: ns per page of each timed pass (the JS that lists a packet's offsets
 * included) and their median. Compare builds by running them alternately.
 * @module
 */
import { parseArgs } from "node:util";
import { DEFAULT_PAGES_PER_PACKET, PAGE_SIZE } from "../src/multifd/wire.ts";
import { PageScan } from "../src/multifd/packet.ts";
import { Region } from "../src/region.ts";
import { currentRuntime } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { out } from "../util/output.ts";
import { fillRandom } from "../util/random.ts";
import { runMain } from "./lib/proc.ts";
import { spread } from "./lib/report.ts";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { "size-mib": { type: "string", default: "2048" }, passes: { type: "string", default: "6" } },
    strict: true,
  });
  const size = Number(values["size-mib"]) * 2 ** 20;
  const passes = Number(values.passes);
  if (!(size >= PAGE_SIZE * DEFAULT_PAGES_PER_PACKET) || !(passes >= 2)) throw new Error("bad --size-mib or --passes");
  const region = Region.allocate(size, { hugePages: true, prefault: true });
  fillRandom(region);
  const scan = new PageScan(region.descriptor, PAGE_SIZE);
  const per = DEFAULT_PAGES_PER_PACKET;
  const offsets = new Float64Array(per), normal = new Float64Array(per), zero = new Float64Array(per);
  const pages = Math.floor(size / PAGE_SIZE);
  const nsPerPage: number[] = [];
  for (let pass = 0; pass < passes; pass++) {
    const started = performance.now();
    for (let first = 0; first + per <= pages; first += per) {
      for (let i = 0; i < per; i++) offsets[i] = (first + i) * PAGE_SIZE;
      if (scan.splitZero(offsets, per, normal, zero) !== 0) throw new Error("random data with a zero page");
    }
    if (pass > 0) nsPerPage.push((performance.now() - started) * 1e6 / pages);
  }
  await region.close();
  out(JSON.stringify({
    bench: "zero-scan",
    runtime: currentRuntime,
    sizeBytes: size,
    nsPerPage: nsPerPage.map((v) => round(v, 1)),
    median: round(spread(nsPerPage)!.median, 1),
  }));
  return 0;
}

await runMain("zero_scan.ts", main);
