// Resource hygiene: many channel and multifd cycles leave open sockets, threads (every
// Worker is a thread) and memory where they started.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import process from "node:process";
import { connect, listen, Region } from "../mod.ts";
import { fillPattern, openTcpSockets, transfer } from "./helpers/multifd.ts";
import { collectGarbage } from "../dev/runtime.ts";

const threads = () => readdirSync("/proc/self/task").length;
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

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
      for (let i = 0; i < 50; i++) await cycle(); // warm up: JIT, thread pools, allocator
      await settle();
      const before = { sockets: openTcpSockets(), threads: threads(), rss: process.memoryUsage().rss };
      for (let i = 0; i < 1000; i++) await cycle();
      await settle();
      const after = { sockets: openTcpSockets(), threads: threads(), rss: process.memoryUsage().rss };
      assert.equal(after.sockets, before.sockets, "sockets leaked");
      assert.ok(after.threads <= before.threads + 2, `threads grew ${before.threads} -> ${after.threads}`);
      const growthMiB = (after.rss - before.rss) / 2 ** 20;
      assert.ok(growthMiB < 32, `RSS grew by ${growthMiB.toFixed(1)} MiB`);
      console.log(`1000 channel cycles: RSS ${growthMiB.toFixed(1)} MiB, threads ${before.threads}->${after.threads}`);
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
      for (let i = 0; i < 10; i++) await cycle(i);
      await settle();
      const before = { sockets: openTcpSockets(), threads: threads(), rss: process.memoryUsage().rss };
      for (let i = 0; i < 200; i++) await cycle(i);
      await settle();
      const after = { sockets: openTcpSockets(), threads: threads(), rss: process.memoryUsage().rss };
      assert.equal(after.sockets, before.sockets, "sockets leaked");
      assert.ok(after.threads <= before.threads + 2, `threads grew ${before.threads} -> ${after.threads}`);
      const growthMiB = (after.rss - before.rss) / 2 ** 20;
      assert.ok(growthMiB < 64, `RSS grew by ${growthMiB.toFixed(1)} MiB`);
      console.log(`200 multifd cycles: RSS ${growthMiB.toFixed(1)} MiB, threads ${before.threads}->${after.threads}`);
    } finally {
      await source.close();
    }
  });
});
