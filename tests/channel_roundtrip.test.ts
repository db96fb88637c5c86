// Byte-exact round trips over loopback: writev and writevZerocopy, random sizes, many
// iovecs per call, and a stream far larger than the socket buffers.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { SocketChannel } from "../mod.ts";
import { native, SocketOption } from "../ffi/mod.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes, random, sameBytes } from "./helpers/pattern.ts";

/** Splits source[start, end) into `count` random-sized views (some may be empty). */
function randomViews(source: Uint8Array, start: number, end: number, count: number, next: (n: number) => number) {
  const cuts = Array.from({ length: count - 1 }, () => start + next(end - start + 1)).sort((a, b) => a - b);
  const bounds = [start, ...cuts, end];
  return bounds.slice(1).map((b, i) => source.subarray(bounds[i], b));
}

/** Reads `total` bytes in chunks and checks them against `source` repeated end to end. */
async function readRepeated(channel: SocketChannel, source: Uint8Array, total: number, chunk: number) {
  const buf = new Uint8Array(chunk);
  let position = 0;
  while (position < total) {
    const want = Math.min(chunk, total - position);
    const view = buf.subarray(0, want);
    assert.equal(await channel.readFull(view), want);
    let checked = 0;
    while (checked < want) {
      const offset = (position + checked) % source.length;
      const n = Math.min(want - checked, source.length - offset);
      assert.ok(
        sameBytes(view.subarray(checked, checked + n), source.subarray(offset, offset + n)),
        `bytes differ near ${position}`,
      );
      checked += n;
    }
    position += want;
  }
}

for (const zerocopy of [false, true]) {
  const write = (c: SocketChannel, views: Uint8Array[]) => zerocopy ? c.writevZerocopy(views) : c.writev(views);
  describe(`${zerocopy ? "writevZerocopy" : "writev"} round trips`, () => {
    test("random sizes, up to 3000 iovecs per call (above IOV_MAX)", async () => {
      const pair = await channelPair({ zerocopy });
      try {
        const next = random(zerocopy ? 7 : 3);
        const source = patternBytes(48 << 20, 11);
        const writer = (async () => {
          let written = 0;
          let offset = 0;
          while (offset < source.length) {
            const end = Math.min(source.length, offset + 1 + next(4 << 20));
            const views = randomViews(source, offset, end, 1 + next(3000), next);
            written += await write(pair.client, views);
            offset = end;
          }
          if (zerocopy) assert.equal(await pair.client.flushZerocopy(), 1, "loopback copies every zero-copy send");
          return written;
        })();
        const received = new Uint8Array(source.length);
        const [written, read] = await Promise.all([writer, pair.server.readFull(received)]);
        assert.equal(written, source.length);
        assert.equal(read, source.length);
        assert.ok(sameBytes(received, source));
        const stats = pair.client.stats;
        assert.equal(stats.bytesWritten, source.length);
        assert.equal(pair.server.stats.bytesRead, source.length);
        if (zerocopy) {
          assert.ok(stats.zerocopySends > 0);
          assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
          assert.equal(stats.zerocopyCopied, stats.zerocopySends, "loopback reports every completion copied");
          assert.equal(stats.zerocopyFlushesAllCopied, 1);
        } else {
          assert.equal(stats.zerocopySends, 0);
        }
      } finally {
        pair.close();
      }
    });
  });
}

describe("a 1 GiB zero-copy stream", () => {
  test("arrives byte-exact; flush returns 1 and the stats add up", async () => {
    const pair = await channelPair({ zerocopy: true });
    try {
      const total = 1 << 30;
      const source = patternBytes(64 << 20, 99);
      const next = random(5);
      const writer = (async () => {
        let position = 0;
        let flushes = 0;
        while (position < total) {
          const offset = position % source.length;
          const end = Math.min(source.length, offset + 1 + next(8 << 20), offset + (total - position));
          const views = randomViews(source, offset, end, 1 + next(64), next);
          position += await pair.client.writevZerocopy(views);
          // Flush each time the source wraps, as multifd does at a sync, then reuse it.
          if (position % source.length === 0) {
            assert.equal(await pair.client.flushZerocopy(), 1);
            flushes++;
          }
        }
        return flushes;
      })();
      const [flushes] = await Promise.all([writer, readRepeated(pair.server, source, total, 8 << 20)]);
      const stats = pair.client.stats;
      assert.equal(stats.bytesWritten, total);
      assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
      assert.equal(stats.zerocopyCopied, stats.zerocopySends);
      assert.equal(stats.zerocopyFlushes, flushes);
      assert.equal(stats.zerocopyFlushesAllCopied, flushes);
      assert.equal(pair.client.zerocopyPending, 0);
    } finally {
      pair.close();
    }
  });
});

describe("sendBufferBytes", () => {
  test("sets SO_SNDBUF (the kernel doubles it); a zero-copy stream through it arrives byte-exact", async () => {
    const pair = await channelPair({ zerocopy: true, sendBufferBytes: 65536 });
    try {
      assert.equal(native.zc_get_option(pair.client.fd, SocketOption.sendBuffer), 2 * 65536);
      const autotuned = native.zc_get_option(pair.server.fd, SocketOption.sendBuffer);
      assert.notEqual(autotuned, 2 * 65536, "the peer without the option keeps the kernel's default");
      const source = patternBytes(3 << 20, 11);
      const total = 24 << 20;
      const writer = (async () => {
        for (let position = 0; position < total; position += source.length) {
          await pair.client.writevZerocopy([source]);
        }
        return await pair.client.flushZerocopy();
      })();
      const [allCopied] = await Promise.all([writer, readRepeated(pair.server, source, total, 1 << 20)]);
      assert.equal(allCopied, 1);
      assert.equal(pair.client.stats.bytesWritten, total);
    } finally {
      pair.close();
    }
  });
});
