// Resource hygiene: many channel and multifd cycles leave open sockets, threads (every
// Worker is a thread) and memory where they started.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { connect, listen, Region } from "../mod.ts";
import { fillPattern, openTcpSockets, transfer } from "./helpers/multifd.ts";
import { collectGarbage } from "../dev/runtime.ts";

/** This process's threads by name. */
const threadNames = () =>
  readdirSync("/proc/self/task").map((task) => readFileSync(`/proc/self/task/${task}/comm`, "utf8").trim());

/** A Worker's thread: `worker-N` under Deno, `Worker` under Bun. */
const isWorker = (name: string) => /^worker-\d+$/.test(name) || name === "Worker";

/** Threads counted apart: Workers (none may outlive its transfer) and the runtime's others. */
function threadCounts(names: string[]): { workers: number; others: number } {
  const workers = names.filter(isWorker).length;
  return { workers, others: names.length - workers };
}

/**
 * The threads once no more Workers run than `before` and at most two more of the runtime's
 * own, waiting up to 12 s: a Worker's thread ends a little after its `terminate()`, and the
 * runtimes' pools (Deno's blocking-I/O threads, of which a busy machine makes it start more)
 * end after 10 s idle. A thread that outlives that is kept by someone: a leak.
 */
async function threadsSettled(before: string[]): Promise<{ names: string[]; settled: boolean }> {
  const limit = threadCounts(before);
  const deadline = Date.now() + 12_000;
  for (;;) {
    const names = threadNames();
    const now = threadCounts(names);
    const settled = now.workers <= limit.workers && now.others <= limit.others + 2;
    if (settled || Date.now() > deadline) return { names, settled };
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Names in `after` beyond those in `before`, for a failure message. */
function grown(before: string[], after: string[]): string {
  const left = [...before];
  return after.filter((name) => {
    const i = left.indexOf(name);
    if (i < 0) return true;
    left.splice(i, 1);
    return false;
  }).join(", ");
}

const settle = async () => {
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

/**
 * Runs `warmUp` cycles (JIT, thread pools, allocator), then `cycles` more, and asserts they
 * left open sockets and threads as they were (threadsSettled) and
 * the RSS within `rssLimitMiB`.
 */
async function cyclesLeaveNothing(
  label: string,
  cycle: (i: number) => Promise<void>,
  { warmUp, cycles, rssLimitMiB }: { warmUp: number; cycles: number; rssLimitMiB: number },
): Promise<void> {
  for (let i = 0; i < warmUp; i++) await cycle(i);
  await settle();
  const before = { sockets: openTcpSockets(), threads: threadNames(), rss: process.memoryUsage().rss };
  for (let i = 0; i < cycles; i++) await cycle(i);
  await settle();
  const threads = await threadsSettled(before.threads);
  assert.equal(openTcpSockets(), before.sockets, "sockets leaked");
  assert.ok(threads.settled, `threads left running: ${grown(before.threads, threads.names)}`);
  const growthMiB = (process.memoryUsage().rss - before.rss) / 2 ** 20;
  assert.ok(growthMiB < rssLimitMiB, `RSS grew by ${growthMiB.toFixed(1)} MiB`);
  console.log(`${label}: RSS ${growthMiB.toFixed(1)} MiB, threads ${before.threads.length}->${threads.names.length}`);
}

describe("resource hygiene", () => {
  test("1,000 channel open / zero-copy transfer / close cycles", async () => {
    const listener = await listen({ hostname: "127.0.0.1", port: 0, zerocopy: true });
    const data = new Uint8Array(64 * 1024).fill(9);
    const received = new Uint8Array(data.length);
    const cycle = async () => {
      const [client, server] = await Promise.all([
        connect({ hostname: "127.0.0.1", port: listener.port, zerocopy: true }),
        listener.accept(),
      ]);
      await Promise.all([client.writevZerocopy([data]).then(() => client.flushZerocopy()), server.readFull(received)]);
      client.close();
      server.close();
    };
    try {
      await cyclesLeaveNothing("1000 channel cycles", cycle, { warmUp: 50, cycles: 1000, rssLimitMiB: 32 });
    } finally {
      listener.close();
    }
  });

  test("200 multifd transfer cycles", async () => {
    const source = Region.allocate(256 * 1024 + 100);
    fillPattern(source, 4);
    const cycle = async (i: number) => {
      const { sent, destination } = await transfer(source, { sender: { channels: 2, zerocopy: i % 2 === 0 } });
      await destination.close();
      assert.equal(sent.verified, true);
    };
    try {
      await cyclesLeaveNothing("200 multifd cycles", cycle, { warmUp: 10, cycles: 200, rssLimitMiB: 64 });
    } finally {
      await source.close();
    }
  });
});
