// Channel safety over real loopback sockets: buffers handed to writevZerocopy survive
// garbage collection until the kernel is done with them, a peer that goes away fails a
// writer promptly, blocked I/O never blocks the event loop, timeouts fire, bad input is
// refused with the documented errors, and IPv6 works.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ChannelClosedError,
  connect,
  InvalidArgumentError,
  listen,
  SocketError,
  TimeoutError,
  ZeroCopyUnsupportedError,
} from "../mod.ts";
import { channelPair, untilStalled } from "./helpers/pair.ts";
import { patternBytes, sameBytes } from "./helpers/pattern.ts";
import { collectGarbage } from "../dev/runtime.ts";
import { requirement } from "./helpers/preconditions.ts";
import { sleep } from "./helpers/time.ts";

const MiB = 1 << 20;

/**
 * Allocates, fills and drops many buffers of `size` bytes around forced collections, so
 * that memory freed by a wrongly released send buffer is reused and overwritten.
 */
async function churn(size: number, rounds = 4, perRound = 48): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    collectGarbage();
    await sleep(5); // lets a concurrent array-buffer sweeper run
    let garbage: Uint8Array[] = [];
    for (let k = 0; k < perRound; k++) garbage.push(new Uint8Array(size).fill(0xee ^ k ^ round));
    garbage = [];
    collectGarbage();
    await sleep(5);
  }
}

/** Settles with the error `promise` rejects with (fails if it resolves) and the time it took. */
async function rejection(promise: Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  try {
    await promise;
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
  assert.fail("expected a rejection");
}

/** Calls an async API and returns its rejection; a synchronous throw is a failure of its own. */
async function rejectionOf(call: () => Promise<unknown>): Promise<unknown> {
  let promise: Promise<unknown>;
  try {
    promise = call();
  } catch (error) {
    assert.fail(`threw synchronously instead of returning a rejected promise: ${error}`);
  }
  return (await rejection(promise)).error;
}

describe("garbage collection while zero-copy sends are in flight", () => {
  // Two sizes: Deno returns 1 MiB backing stores to the kernel with munmap (the pinned
  // pages then keep their bytes, so a missing hold cannot show there), while malloc hands
  // 64 KiB ones out again at once, as Bun does for both.
  for (const [COUNT, SIZE] of [[32, MiB], [512, 64 * 1024]]) {
    test(`${COUNT} x ${SIZE >= MiB ? `${SIZE / MiB} MiB` : `${SIZE / 1024} KiB`} buffers dropped right after writevZerocopy arrive intact`, async () => {
      const pair = await channelPair({ zerocopy: true, ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
      try {
        const copies: Uint8Array[] = [];
        let resolved = 0;
        // The buffer exists only inside this function: once it returns, the channel holds
        // the only reference (the verification copy is a different allocation).
        const writeFresh = (i: number): Promise<number> => {
          const buffer = patternBytes(SIZE, 1000 + i);
          copies.push(buffer.slice());
          return pair.client.writevZerocopy([buffer]).then((n) => (resolved++, n));
        };
        const writes: Promise<number>[] = [];
        for (let i = 0; i < COUNT; i++) writes.push(writeFresh(i));

        // The receiver does not read yet: the writer stalls with sends queued in the kernel.
        await untilStalled(pair.client);
        const resolvedAtGc = resolved;
        const pendingAtGc = pair.client.zerocopyPending;
        assert.ok(
          resolvedAtGc > 0 && resolvedAtGc < COUNT,
          `${resolvedAtGc} writes resolved before the reader started`,
        );
        assert.ok(pendingAtGc > 0, "zero-copy sends must be in flight while garbage is collected");
        await churn(SIZE);

        const received = new Uint8Array(COUNT * SIZE);
        const reading = pair.server.readFull(received);
        const written = await Promise.all(writes);
        // Every write resolved; the last sends may still sit in the send queue.
        await churn(SIZE, 2);
        assert.equal(await reading, received.length);
        assert.equal(await pair.client.flushZerocopy(), 1);

        assert.deepEqual(written, copies.map((c) => c.length));
        for (let i = 0; i < COUNT; i++) {
          assert.ok(sameBytes(received.subarray(i * SIZE, (i + 1) * SIZE), copies[i]), `buffer ${i} was corrupted`);
        }
        const stats = pair.client.stats;
        assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
        assert.equal(pair.client.zerocopyPending, 0);
      } finally {
        pair.close();
      }
    });
  }
});

describe("the peer closes mid-transfer", () => {
  for (const zerocopy of [false, true]) {
    const name = zerocopy ? "writevZerocopy" : "writev";
    test(`${name} of a large stream rejects promptly with EPIPE/ECONNRESET`, async () => {
      const pair = await channelPair({ zerocopy, ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
      try {
        const chunk = patternBytes(4 * MiB, 5);
        const writer = (async () => {
          for (let i = 0; i < 256; i++) { // 1 GiB: far more than any socket buffer holds
            await (zerocopy ? pair.client.writevZerocopy([chunk]) : pair.client.writev([chunk]));
          }
        })();
        const head = new Uint8Array(MiB);
        assert.equal(await pair.server.readFull(head), head.length);
        assert.ok(sameBytes(head, chunk.subarray(0, MiB)));
        pair.server.close(); // unread data queued: the kernel answers with a reset
        const { error, ms } = await rejection(writer);
        const ok = error instanceof ChannelClosedError ||
          (error instanceof SocketError && ["EPIPE", "ECONNRESET"].includes(error.code));
        assert.ok(ok, `unexpected error: ${error}`);
        assert.ok(ms < 3_000, `the writer took ${ms.toFixed(0)} ms to fail`);
        assert.ok(pair.client.stats.bytesWritten < 256 * chunk.length);
      } finally {
        pair.close();
      }
    });
  }
});

describe("the event loop is never blocked", () => {
  for (const zerocopy of [false, true]) {
    const name = zerocopy ? "writevZerocopy" : "writev";
    test(`timers keep firing while ${name} waits for a peer that does not read`, async () => {
      const pair = await channelPair({ zerocopy, ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
      let ticks = 0;
      const interval = setInterval(() => ticks++, 10);
      try {
        const source = patternBytes(64 * MiB, 9);
        let done = false;
        const writing = (zerocopy ? pair.client.writevZerocopy([source]) : pair.client.writev([source]))
          .finally(() => (done = true));
        await untilStalled(pair.client);
        const ticksBefore = ticks;
        await sleep(300);
        assert.equal(done, false, "the write must still be blocked");
        assert.ok(pair.client.stats.bytesWritten < source.length);
        assert.ok(ticks - ticksBefore >= 10, `only ${ticks - ticksBefore} ticks in 300 ms`);

        const received = new Uint8Array(source.length);
        const [written, read] = await Promise.all([writing, pair.server.readFull(received)]);
        if (zerocopy) assert.equal(await pair.client.flushZerocopy(), 1);
        assert.equal(written, source.length);
        assert.equal(read, source.length);
        assert.ok(sameBytes(received, source));
      } finally {
        clearInterval(interval);
        pair.close();
      }
    });
  }

  test("timers keep firing while readFull waits for bytes", async () => {
    const pair = await channelPair({ ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
    let ticks = 0;
    const interval = setInterval(() => ticks++, 10);
    try {
      const buf = new Uint8Array(1000);
      let done = false;
      const reading = pair.server.readFull(buf).finally(() => (done = true));
      await sleep(300);
      assert.equal(done, false);
      assert.ok(ticks >= 10, `only ${ticks} ticks in 300 ms`);
      const data = patternBytes(1000, 3);
      await pair.client.writev([data.subarray(0, 400), data.subarray(400)]);
      assert.equal(await reading, 1000);
      assert.ok(sameBytes(buf, data));
    } finally {
      clearInterval(interval);
      pair.close();
    }
  });
});

describe("ioTimeoutMs", () => {
  for (const zerocopy of [false, true]) {
    const name = zerocopy ? "writevZerocopy" : "writev";
    test(`${name} blocked on a peer that never reads rejects with TimeoutError`, async () => {
      const pair = await channelPair({ zerocopy, ioTimeoutMs: 300 }, {});
      try {
        const source = patternBytes(64 * MiB, 4);
        const { error, ms } = await rejection(
          zerocopy ? pair.client.writevZerocopy([source]) : pair.client.writev([source]),
        );
        assert.ok(error instanceof TimeoutError, `unexpected error: ${error}`);
        assert.equal(error.operation, "write");
        assert.ok(ms >= 250 && ms < 5_000, `timed out after ${ms.toFixed(0)} ms`);
        assert.ok(pair.client.stats.bytesWritten > 0 && pair.client.stats.bytesWritten < source.length);
      } finally {
        pair.close();
      }
    });
  }

  test("readFull with nothing arriving rejects with TimeoutError", async () => {
    const pair = await channelPair({}, { ioTimeoutMs: 300 });
    try {
      const { error, ms } = await rejection(pair.server.readFull(new Uint8Array(16)));
      assert.ok(error instanceof TimeoutError, `unexpected error: ${error}`);
      assert.equal(error.operation, "read");
      assert.ok(ms >= 250 && ms < 5_000, `timed out after ${ms.toFixed(0)} ms`);
      // The channel stays usable: a later read gets the bytes.
      await pair.client.writev([Uint8Array.of(1, 2, 3)]);
      const buf = new Uint8Array(3);
      assert.equal(await pair.server.readFull(buf), 3);
      assert.deepEqual([...buf], [1, 2, 3]);
    } finally {
      pair.close();
    }
  });
});

describe("bad input and closed channels", () => {
  test("malformed buffers, ports and timeouts are InvalidArgumentError", async () => {
    const pair = await channelPair({ zerocopy: true });
    try {
      const c = pair.client;
      const bad = [
        () => c.writev("x" as unknown as Uint8Array[]),
        () => c.writev([123] as unknown as Uint8Array[]),
        () => c.writev([new Uint16Array(4)] as unknown as Uint8Array[]),
        () => c.writevZerocopy("x" as unknown as Uint8Array[]),
        () => c.writevZerocopy([{}] as unknown as Uint8Array[]),
        () => c.readFull("x" as unknown as Uint8Array),
        () => connect({ hostname: "127.0.0.1", port: 70000 }),
        () => connect({ hostname: "127.0.0.1", port: 0 }),
        () => connect({ hostname: "", port: 80 }),
        () => listen({ port: -1 }),
        () => listen({ port: 1.5 }),
        () => listen({ port: 0, ioTimeoutMs: -5 }).then((l) => l.close()),
        () => listen({ port: 0, sendBufferBytes: 100 }).then((l) => l.close()),
        () => listen({ port: 0, sendBufferBytes: 65536.5 }).then((l) => l.close()),
        () => connect({ hostname: "127.0.0.1", port: 80, sendBufferBytes: 2 ** 31 }),
      ];
      for (const [i, call] of bad.entries()) {
        const error = await rejectionOf(call);
        assert.ok(error instanceof InvalidArgumentError, `case ${i}: ${error}`);
      }
      assert.throws(() => c.writevSync("x" as unknown as Uint8Array[]), InvalidArgumentError);
      assert.throws(() => c.writevZerocopySync([7] as unknown as Uint8Array[]), InvalidArgumentError);
      assert.throws(() => c.readFullSync(null as unknown as Uint8Array), InvalidArgumentError);
      // Nothing was sent by any of them: the stream is intact.
      await c.writev([Uint8Array.of(42)]);
      const one = new Uint8Array(1);
      assert.equal(await pair.server.readFull(one), 1);
      assert.equal(one[0], 42);
      assert.equal(c.stats.bytesWritten, 1);
    } finally {
      pair.close();
    }
  });

  test("zero-copy on a channel opened without it is ZeroCopyUnsupportedError, never a copy", async () => {
    const pair = await channelPair({ zerocopy: false });
    try {
      const data = new Uint8Array(4096).fill(1);
      assert.equal(pair.client.zerocopy, false);
      assert.ok((await rejectionOf(() => pair.client.writevZerocopy([data]))) instanceof ZeroCopyUnsupportedError);
      assert.throws(() => pair.client.writevZerocopySync([data]), ZeroCopyUnsupportedError);
      assert.equal(pair.client.stats.bytesWritten, 0);
      assert.equal(await pair.client.flushZerocopy(), 0);
      // Plain writes still work on it.
      await pair.client.writev([data]);
      const buf = new Uint8Array(data.length);
      assert.equal(await pair.server.readFull(buf), data.length);
      assert.ok(sameBytes(buf, data));
    } finally {
      pair.close();
    }
  });

  test("every operation after close is ChannelClosedError", async () => {
    const pair = await channelPair({ zerocopy: true });
    try {
      const c = pair.client;
      c.close();
      c.close(); // idempotent
      assert.equal(c.closed, true);
      assert.equal(c.fd, -1);
      const data = [new Uint8Array(8)];
      for (const call of [() => c.writev(data), () => c.writevZerocopy(data), () => c.flushZerocopy()]) {
        assert.ok((await rejectionOf(call)) instanceof ChannelClosedError);
      }
      assert.ok((await rejectionOf(() => c.readFull(new Uint8Array(8)))) instanceof ChannelClosedError);
      assert.throws(() => c.writevSync(data), ChannelClosedError);
      assert.throws(() => c.writevZerocopySync(data), ChannelClosedError);
      assert.throws(() => c.flushZerocopySync(), ChannelClosedError);
      assert.throws(() => c.readFullSync(new Uint8Array(8)), ChannelClosedError);
      assert.throws(() => c.detach(), ChannelClosedError);
      // The peer sees the end of the stream.
      assert.equal(await pair.server.readFull(new Uint8Array(8)), 0);
    } finally {
      pair.close();
    }
  });

  test("close() during a pending readFull rejects it with ChannelClosedError", async () => {
    const pair = await channelPair({}, { ioTimeoutMs: 20_000 });
    try {
      const reading = pair.server.readFull(new Uint8Array(100));
      await sleep(100);
      pair.server.close();
      const { error, ms } = await rejection(reading);
      assert.ok(error instanceof ChannelClosedError, `unexpected error: ${error}`);
      assert.ok(ms < 2_000, `took ${ms.toFixed(0)} ms`);
    } finally {
      pair.close();
    }
  });

  test("a closed listener rejects accept with ChannelClosedError", async () => {
    const listener = await listen({ port: 0 });
    const accepting = listener.accept();
    await sleep(50);
    listener.close();
    assert.ok((await rejection(accepting)).error instanceof ChannelClosedError);
    assert.ok((await rejectionOf(() => listener.accept())) instanceof ChannelClosedError);
  });
});

describe("queued operations", () => {
  test("readFull calls made back to back fill their own buffers, in call order", async () => {
    const pair = await channelPair({ ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
    try {
      const data = patternBytes(3 * 1000, 12);
      const bufs = [new Uint8Array(1000), new Uint8Array(1000), new Uint8Array(1000)];
      const reads = bufs.map((buf) => pair.server.readFull(buf)); // none awaited yet
      await pair.client.writev([data]);
      assert.deepEqual(await Promise.all(reads), [1000, 1000, 1000]);
      for (let i = 0; i < 3; i++) {
        assert.ok(sameBytes(bufs[i], data.subarray(i * 1000, (i + 1) * 1000)), `read ${i} got the wrong bytes`);
      }
    } finally {
      pair.close();
    }
  });

  test("a refused readFullSync leaves a pending readFull untouched", async () => {
    const pair = await channelPair({ ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
    try {
      const buf = new Uint8Array(100);
      const reading = pair.server.readFull(buf);
      await sleep(50); // the async read is now waiting on the socket
      assert.throws(() => pair.server.readFullSync(new Uint8Array(10)), InvalidArgumentError);
      const data = patternBytes(100, 13);
      await pair.client.writev([data]);
      assert.equal(await reading, 100);
      assert.ok(sameBytes(buf, data));
    } finally {
      pair.close();
    }
  });

  test("queued writev and writevZerocopy calls arrive in call order", async () => {
    const pair = await channelPair({ zerocopy: true, ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
    try {
      const parts = Array.from({ length: 40 }, (_, i) => patternBytes(100_000 + i * 4099, 500 + i));
      const total = parts.reduce((n, p) => n + p.length, 0);
      const writes = parts.map((p, i) => i % 2 ? pair.client.writevZerocopy([p]) : pair.client.writev([p]));
      const received = new Uint8Array(total);
      assert.equal(await pair.server.readFull(received), total);
      await Promise.all(writes);
      assert.equal(await pair.client.flushZerocopy(), 1);
      let offset = 0;
      for (const [i, p] of parts.entries()) {
        assert.ok(sameBytes(received.subarray(offset, offset + p.length), p), `part ${i} out of place`);
        offset += p.length;
      }
    } finally {
      pair.close();
    }
  });
});

const ipv6 = await listen({ hostname: "::1", port: 0 }).then((l) => (l.close(), true), () => false);

describe("IPv6", { skip: requirement(ipv6, "::1 is not available on this host") }, () => {
  test("zero-copy round trip over ::1", async () => {
    const pair = await channelPair({ zerocopy: true, ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 }, "::1");
    try {
      assert.equal(pair.client.zerocopy, true);
      const source = patternBytes(8 * MiB + 333, 66);
      const views = [source.subarray(0, 1), source.subarray(1, 5 * MiB), source.subarray(5 * MiB)];
      const received = new Uint8Array(source.length);
      const [written, read] = await Promise.all([
        pair.client.writevZerocopy(views).then(async (n) => {
          assert.equal(await pair.client.flushZerocopy(), 1);
          return n;
        }),
        pair.server.readFull(received),
      ]);
      assert.equal(written, source.length);
      assert.equal(read, source.length);
      assert.ok(sameBytes(received, source));
      const stats = pair.client.stats;
      assert.ok(stats.zerocopySends > 0);
      assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
    } finally {
      pair.close();
    }
  });
});
