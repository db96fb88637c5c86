/**
 * What creating a receive's output file costs before its first byte can land
 * (`Region.createFile`): reserved (fallocate, the default) against `sparse` (the free space
 * checked, pages allocated as written), alternately, on the file system of `--dir`. On
 * tmpfs, fallocate allocates every page of the file: a receive waits for it in full.
 *
 *   deno run -A bench/create_file.ts [--dir /dev/shm] [--size-mib 2048] [--rounds 5]
 *   bun bench/create_file.ts
 *
 * One JSON line: ms per creation of each kind in each round, their medians, and the median
 * ratio reserved / sparse inside a round.
 * @module
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Region } from "../src/region.ts";
import { currentRuntime } from "../dev/runtime.ts";
import { round } from "../util/format.ts";
import { out } from "../util/output.ts";
import { runMain } from "./lib/proc.ts";
import { spread } from "./lib/report.ts";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      dir: { type: "string", default: "/dev/shm" },
      "size-mib": { type: "string", default: "2048" },
      rounds: { type: "string", default: "5" },
    },
    strict: true,
  });
  const size = Number(values["size-mib"]) * 2 ** 20;
  const rounds = Number(values.rounds);
  if (!(size > 0) || !(rounds >= 1)) throw new Error("bad --size-mib or --rounds");
  const dir = mkdtempSync(join(values.dir, "zcmf-create-file-"));
  const file = join(dir, "out.bin");
  /** Milliseconds to create (and map) the file; the file is removed after. */
  const create = async (sparse: boolean) => {
    const started = performance.now();
    const region = Region.createFile(file, size, { sparse });
    const ms = performance.now() - started;
    await region.close();
    rmSync(file);
    // The kernel finishes freeing the pages in the background: not into the next creation.
    await new Promise((resolve) => setTimeout(resolve, 200));
    return ms;
  };
  try {
    const reserved: number[] = [], sparse: number[] = [], ratios: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Reserved first in even rounds, sparse first in odd ones: neither kind always leads.
      let a: number, b: number;
      if (r % 2 === 0) {
        a = await create(false);
        b = await create(true);
      } else {
        b = await create(true);
        a = await create(false);
      }
      reserved.push(round(a, 2));
      sparse.push(round(b, 2));
      ratios.push(round(a / b, 1));
    }
    out(JSON.stringify({
      bench: "create-file",
      runtime: currentRuntime,
      dir: values.dir,
      bytes: size,
      reservedMs: reserved,
      sparseMs: sparse,
      reservedMedianMs: spread(reserved)!.median,
      sparseMedianMs: spread(sparse)!.median,
      medianRatio: spread(ratios)!.median,
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return 0;
}

await runMain("create_file.ts", main);
