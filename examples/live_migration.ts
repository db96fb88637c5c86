/**
 * Live migration in miniature (QEMU's pre-copy): a toy workload keeps writing into the
 * source region while it is being sent. Every write marks its 4 KiB page in a dirty
 * bitmap; each round sends the pages dirtied since the previous round began (the first
 * round sends everything). Once the dirty set is small (or after --max-rounds) the
 * workload stops — the "downtime" — a last round sends what is still dirty, and the
 * destination must equal the source byte for byte.
 *
 *   deno run -A examples/live_migration.ts
 *   bun examples/live_migration.ts --mib 512 --rate 50000 --json
 *
 * Both ends run in this process; the pages go out from the channel Workers while the
 * workload writes on the main thread between awaits — memory really changes while it is
 * being sent, which is why dirty pages are sent again.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { MAX_CHANNELS, PAGE_SIZE, Region, runtime } from "../mod.ts";
import { loopbackPair } from "./loopback_pair.ts";
import { formatBytes, formatSeconds, oneLine, parseInteger, statsRows, table } from "./cli_util.ts";
import { round } from "../util/format.ts";
import { err, out } from "../util/output.ts";
import { fillRandom, Xorshift128 } from "../util/random.ts";

const USAGE = `usage: live_migration.ts [options]

  --mib N           region size in MiB (default 256)
  --channels N      parallel channels, 1..${MAX_CHANNELS} (default 4)
  --no-zerocopy     plain sends instead of MSG_ZEROCOPY
  --rate N          pages the workload writes per second (default 20000, ~80 MB/s)
  --threshold N     converged when at most N pages are dirty after a round (default 256)
  --max-rounds N    at most N rounds while the workload runs, converged or not; then
                    the final round (default 10)
  --json            print one JSON object instead of text
  -h, --help        this help`;

function options() {
  try {
    const { values } = parseArgs({
      options: {
        mib: { type: "string", default: "256" },
        channels: { type: "string", default: "4" },
        "no-zerocopy": { type: "boolean", default: false },
        rate: { type: "string", default: "20000" },
        threshold: { type: "string", default: "256" },
        "max-rounds": { type: "string", default: "10" },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    });
    if (values.help) {
      out(USAGE);
      process.exit(0);
    }
    return {
      bytes: parseInteger(values.mib, "--mib", 1, 1 << 20) * 2 ** 20,
      channels: parseInteger(values.channels, "--channels", 1, MAX_CHANNELS),
      zerocopy: !values["no-zerocopy"],
      rate: parseInteger(values.rate, "--rate", 0, 10_000_000),
      threshold: parseInteger(values.threshold, "--threshold", 0, 2 ** 31),
      maxRounds: parseInteger(values["max-rounds"], "--max-rounds", 1, 10_000),
      json: values.json,
    };
  } catch (error) {
    err(`live_migration.ts: ${oneLine((error as Error).message)}\n\n${USAGE}`);
    process.exit(2);
  }
}

/**
 * The guest: writes random values into random pages at a steady rate, 80% of them into
 * a hot set (1/64 of the region, like a working set), and marks every page it writes.
 */
class Workload {
  readonly dirty: Uint8Array;
  dirtyCount = 0;
  writes = 0;
  readonly #region: Region;
  readonly #pageCount: number;
  readonly #hotStart: number;
  readonly #hotPages: number;
  readonly #rate: number;
  readonly #prng = new Xorshift128();
  #running = false;
  #loop: Promise<void> | undefined;

  constructor(region: Region, rate: number) {
    this.#region = region;
    this.#pageCount = Math.ceil(region.size / PAGE_SIZE);
    this.dirty = new Uint8Array(this.#pageCount);
    this.#hotPages = Math.max(1, Math.floor(this.#pageCount / 64));
    this.#hotStart = this.#prng.below(this.#pageCount - this.#hotPages + 1);
    this.#rate = rate;
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Stops writing; resolves once no write can happen any more. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }

  /** The dirty pages (ascending) and a clean bitmap: what the next round must send. */
  takeDirty(): Uint32Array {
    const pages = new Uint32Array(this.dirtyCount);
    let n = 0;
    for (let page = 0; page < this.#pageCount && n < pages.length; page++) {
      if (this.dirty[page]) pages[n++] = page;
    }
    this.dirty.fill(0);
    this.dirtyCount = 0;
    return pages;
  }

  async #run(): Promise<void> {
    let last = performance.now();
    let credit = 0;
    while (this.#running) {
      const now = performance.now();
      credit += ((now - last) / 1000) * this.#rate;
      last = now;
      for (; credit >= 1; credit--) this.#writeOnePage();
      // Yield: the transfer's messages (round done…) are handled between bursts.
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  #writeOnePage(): void {
    const prng = this.#prng;
    const page = prng.below(5) < 4 ? this.#hotStart + prng.below(this.#hotPages) : prng.below(this.#pageCount);
    const offset = page * PAGE_SIZE;
    const view = this.#region.view(offset, Math.min(PAGE_SIZE, this.#region.size - offset));
    for (let i = 0; i < 4; i++) view[prng.below(view.length)] = prng.next() & 0xff;
    this.writes++;
    if (!this.dirty[page]) {
      this.dirty[page] = 1;
      this.dirtyCount++;
    }
  }
}

interface RoundReport {
  round: number;
  pagesSent: number;
  bytesSent: number;
  seconds: number;
  /** Pages the workload dirtied while this round was running (sent next round). */
  dirtyAfter: number;
  writes: number;
  final: boolean;
}

const { bytes, channels, zerocopy, rate, threshold, maxRounds, json } = options();
const say = (text: string) => json || out(text);

async function main(): Promise<number> {
  const source = Region.allocate(bytes, { hugePages: true, prefault: true });
  const destination = Region.allocate(bytes, { hugePages: true, prefault: true });
  fillRandom(source);
  const pageCount = Math.ceil(bytes / PAGE_SIZE);

  const { sender, receiver, receiving } = await loopbackPair(source, destination, { channels, zerocopy });

  say(
    `${runtime}: migrating ${formatBytes(bytes)} (${pageCount} pages) over ${channels} channel${
      channels === 1 ? "" : "s"
    }, zero-copy ` +
      `${zerocopy ? "on" : "off"}, while the workload writes ${rate} pages/s (80% into a hot set of ` +
      `${Math.max(1, Math.floor(pageCount / 64))} pages)`,
  );
  say(`converges at <= ${threshold} dirty pages, or stops iterating after ${maxRounds} rounds\n`);
  const rows: RoundReport[] = [];
  const workload = new Workload(source, rate);
  const runRound = async (pages: Uint32Array | undefined, final: boolean) => {
    const writesBefore = workload.writes;
    const bytesBefore = sender.bytesSent;
    const started = performance.now();
    await sender.sendRound(pages);
    const row: RoundReport = {
      round: rows.length + 1,
      pagesSent: pages ? pages.length : pageCount,
      bytesSent: sender.bytesSent - bytesBefore,
      seconds: (performance.now() - started) / 1000,
      dirtyAfter: workload.dirtyCount,
      writes: workload.writes - writesBefore,
      final,
    };
    rows.push(row);
    say(
      `round ${String(row.round).padStart(2)}${final ? " (final, workload stopped)" : ""}: sent ${
        String(row.pagesSent).padStart(7)
      } pages (${formatBytes(row.bytesSent)}) in ${formatSeconds(row.seconds)}; ${row.writes} writes meanwhile, ` +
        `${row.dirtyAfter} pages dirty now`,
    );
  };

  let converged = false;
  let downtimeSeconds = 0;
  try {
    workload.start();
    // Round 1: everything (the workload is already writing, so some of it is stale at once).
    workload.takeDirty();
    await runRound(undefined, false);
    while (workload.dirtyCount > threshold && rows.length < maxRounds) {
      await runRound(workload.takeDirty(), false);
    }
    converged = workload.dirtyCount <= threshold;
    // Stop the guest; the final round is the downtime of a real migration.
    const stopped = performance.now();
    await workload.stop();
    await runRound(workload.takeDirty(), true);
    downtimeSeconds = (performance.now() - stopped) / 1000;
  } catch (error) {
    await workload.stop();
    await Promise.allSettled([sender.abort(), receiver.abort()]);
    throw error;
  }
  const sent = await sender.finish();
  const received = await receiving;
  const equal = source.equals(destination);
  await source.close();
  await destination.close();
  const ok = sent.verified && received.verified && equal;

  if (json) {
    out(JSON.stringify({
      runtime,
      ok,
      bytes,
      channels,
      zerocopy,
      rate,
      converged,
      downtimeSeconds: round(downtimeSeconds),
      writes: workload.writes,
      equal,
      verified: sent.verified && received.verified,
      rounds: rows.map((r) => ({ ...r, seconds: round(r.seconds) })),
      sender: sent,
      receiver: received,
    }));
  } else {
    const pagesSent = rows.reduce((total, r) => total + r.pagesSent, 0);
    out("");
    out(
      `${converged ? "converged" : `did not converge within ${maxRounds} rounds`}; downtime (stop + final round): ${
        formatSeconds(downtimeSeconds)
      }`,
    );
    out(
      `${workload.writes} writes by the workload; ${pagesSent} pages sent for a region of ${pageCount} ` +
        `(${((pagesSent / pageCount - 1) * 100).toFixed(1)}% re-sent)`,
    );
    out("");
    out(table(["", "sender", "receiver"], statsRows([sent, received])));
    out("");
    out(`checksums        ${sent.verified && received.verified ? "match (verified on both sides)" : "DO NOT MATCH"}`);
    out(`byte for byte    ${equal ? "identical: the destination has every write" : "DIFFERENT"}`);
  }
  if (!ok) err(`live_migration.ts: FAILED: ${equal ? "the checksums were not verified" : "the copy differs"}`);
  return ok ? 0 : 1;
}

try {
  process.exit(await main());
} catch (error) {
  err(`live_migration.ts: failed: ${oneLine(error)}`);
  process.exit(1);
}
