// The locked-memory budget of zero-copy sends (zerocopyBudgetBytes): what the process may
// pin (RLIMIT_MEMLOCK, CAP_IPC_LOCK) is read correctly, the option is validated, and a
// channel keeps the charge of its outstanding sends within its budget, splitting longer
// writes, with every byte intact. (As an ordinary user, with the kernel enforcing the
// limit: unprivileged.test.ts.)
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import {
  connect,
  InvalidArgumentError,
  listen,
  LOCKED_MEMORY_BUDGET_SHARE,
  lockedMemoryBudget,
  lockedMemoryFacts,
  MIN_ZEROCOPY_BUDGET_BYTES,
  SocketChannel,
} from "../mod.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes, sameBytes } from "./helpers/pattern.ts";

const KiB = 1024;
const MiB = 1 << 20;
const PAGE = 4096;

/** The charge the kernel puts on one zero-copy sendmsg (net/core/skbuff.c). */
const charge = (length: number) => (Math.floor(length / PAGE) + 2) * PAGE;

describe("lockedMemoryFacts and lockedMemoryBudget", () => {
  test("report this process's RLIMIT_MEMLOCK, CAP_IPC_LOCK and user namespace", () => {
    const facts = lockedMemoryFacts();
    const ulimit = spawnSync("bash", ["-c", "ulimit -l"], { encoding: "utf8" }).stdout.trim();
    assert.equal(facts.limitBytes, ulimit === "unlimited" ? -1 : Number(ulimit) * KiB, `ulimit -l: ${ulimit}`);
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))![1];
    assert.equal(facts.capIpcLock, ((BigInt(`0x${capEff}`) >> 14n) & 1n) === 1n, `CapEff ${capEff}`);
    const namespace = readlinkSync("/proc/self/ns/user");
    assert.equal(facts.initialUserNamespace, namespace === "user:[4026531837]", namespace);
    assert.equal(facts.exempt, facts.capIpcLock && facts.initialUserNamespace);
  });

  test("the budget: -1 when exempt or unlimited, else a share of the limit in whole pages", () => {
    const facts = lockedMemoryFacts();
    const budget = lockedMemoryBudget();
    if (facts.exempt || facts.limitBytes < 0) assert.equal(budget, -1);
    else {
      assert.equal(budget % PAGE, 0);
      assert.ok(budget <= facts.limitBytes * LOCKED_MEMORY_BUDGET_SHARE && budget > facts.limitBytes / 4);
    }
  });
});

describe("zerocopyBudgetBytes", () => {
  test("invalid values are InvalidArgumentError; -1 and the minimum are accepted", async () => {
    for (const bad of [0, 100, MIN_ZEROCOPY_BUDGET_BYTES - 1, 65536.5, -2, NaN, Infinity, 2 ** 53]) {
      await assert.rejects(listen({ port: 0, zerocopyBudgetBytes: bad }), InvalidArgumentError, `listen ${bad}`);
      await assert.rejects(
        connect({ hostname: "127.0.0.1", port: 80, zerocopy: true, zerocopyBudgetBytes: bad }),
        (error: unknown) => error instanceof InvalidArgumentError && /zerocopyBudgetBytes/.test(error.message),
        `connect ${bad}`,
      );
      assert.throws(() => new SocketChannel(1_000_000, { zerocopyBudgetBytes: bad }), InvalidArgumentError);
    }
    for (const good of [-1, MIN_ZEROCOPY_BUDGET_BYTES]) {
      const pair = await channelPair({ zerocopy: true, zerocopyBudgetBytes: good });
      try {
        assert.equal(pair.client.zerocopyBudgetBytes, good);
      } finally {
        pair.close();
      }
    }
  });

  test("the default is this process's budget; a channel without zero-copy has none", async () => {
    const pair = await channelPair({ zerocopy: true });
    try {
      const budget = lockedMemoryBudget();
      assert.equal(pair.client.zerocopyBudgetBytes, budget < 0 ? -1 : Math.max(MIN_ZEROCOPY_BUDGET_BYTES, budget));
      assert.equal(pair.server.zerocopyBudgetBytes, -1);
    } finally {
      pair.close();
    }
  });

  for (const budget of [256 * KiB, MIN_ZEROCOPY_BUDGET_BYTES]) {
    test(`budget ${budget / KiB} KiB: one 8 MiB write in several iovecs is split, its charge stays within the budget`, async () => {
      const pair = await channelPair(
        { zerocopy: true, zerocopyBudgetBytes: budget, ioTimeoutMs: 20_000, flushTimeoutMs: 20_000 },
        { ioTimeoutMs: 20_000 },
      );
      let maxPinned = 0;
      const sample = setInterval(() => (maxPinned = Math.max(maxPinned, pair.client.zerocopyPinnedBytes)), 1);
      try {
        const source = patternBytes(8 * MiB + 4321, 17);
        // Cuts inside iovecs and across them: 1 byte, 300 KiB + 5, 5 MiB, the rest.
        const bounds = [0, 1, 300 * KiB + 6, 5 * MiB + 300 * KiB + 6, source.length];
        const views = bounds.slice(1).map((end, i) => source.subarray(bounds[i], end));
        const received = new Uint8Array(source.length);
        const [written, read] = await Promise.all([
          pair.client.writevZerocopy(views),
          pair.server.readFull(received),
        ]);
        assert.equal(await pair.client.flushZerocopy(), 1);
        assert.equal(written, source.length);
        assert.equal(read, source.length);
        assert.ok(sameBytes(received, source), "bytes differ");

        const stats = pair.client.stats;
        const longest = budget - 2 * PAGE;
        assert.ok(charge(longest) <= budget);
        assert.ok(
          stats.zerocopySends >= Math.ceil(source.length / longest),
          `${stats.zerocopySends} sends for ${source.length} bytes with at most ${longest} per send`,
        );
        assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
        assert.ok(maxPinned > 0 && maxPinned <= budget, `${maxPinned} bytes pinned, budget ${budget}`);
        assert.equal(pair.client.zerocopyPinnedBytes, 0, "nothing is pinned after the flush");
      } finally {
        clearInterval(sample);
        pair.close();
      }
    });
  }

  test("many writes against a slow reader wait for completions instead of exceeding the budget", async () => {
    const budget = 512 * KiB;
    const pair = await channelPair(
      { zerocopy: true, zerocopyBudgetBytes: budget, ioTimeoutMs: 20_000, flushTimeoutMs: 20_000 },
      { ioTimeoutMs: 20_000 },
    );
    try {
      const sizes = Array.from({ length: 120 }, (_, i) => 40 * KiB + i * 977);
      const total = sizes.reduce((a, b) => a + b, 0);
      const source = patternBytes(total, 23);
      const received = new Uint8Array(total);
      // The reader takes the stream in small bites with pauses: completions come slowly.
      const reading = (async () => {
        for (let at = 0; at < total; at += 256 * KiB) {
          await new Promise((resolve) => setTimeout(resolve, 2));
          await pair.server.readFull(received.subarray(at, Math.min(total, at + 256 * KiB)));
        }
      })();
      let offset = 0;
      let maxPinned = 0;
      for (const size of sizes) {
        await pair.client.writevZerocopy([source.subarray(offset, offset + size)]);
        offset += size;
        maxPinned = Math.max(maxPinned, pair.client.zerocopyPinnedBytes);
      }
      assert.equal(await pair.client.flushZerocopy(), 1);
      await reading;
      assert.ok(sameBytes(received, source), "bytes differ");
      assert.ok(maxPinned <= budget, `${maxPinned} bytes pinned, budget ${budget}`);
      const stats = pair.client.stats;
      assert.ok(stats.zerocopyBudgetWaits > 0, "the budget never made the writer wait");
      assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
    } finally {
      pair.close();
    }
  });

  test("-1: no budget, a long write goes out in as few sends as the socket takes", async () => {
    const pair = await channelPair(
      { zerocopy: true, zerocopyBudgetBytes: -1, ioTimeoutMs: 20_000 },
      { ioTimeoutMs: 20_000 },
    );
    try {
      const source = patternBytes(8 * MiB, 29);
      const received = new Uint8Array(source.length);
      await Promise.all([pair.client.writevZerocopy([source]), pair.server.readFull(received)]);
      assert.equal(await pair.client.flushZerocopy(), 1);
      assert.ok(sameBytes(received, source));
      const stats = pair.client.stats;
      assert.equal(stats.zerocopyBudgetWaits, 0);
      assert.ok(stats.zerocopySends < Math.ceil(source.length / (256 * KiB - 2 * PAGE)), `${stats.zerocopySends}`);
    } finally {
      pair.close();
    }
  });
});
