// SocketChannel.readPagesSync: a packet's pages read straight into their places in one native
// call (zig/transfer.zig zc_recv_pages), over real loopback sockets. The data is written
// before the read starts (the sizes fit the socket buffers), so the blocking read cannot wait
// on a writer in the same thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../src/errors.ts";
import { Region } from "../src/region.ts";
import { channelPair, type Pair } from "./helpers/pair.ts";
import { patternBytes } from "./helpers/pattern.ts";

/** The bytes pages at `offsets` hold, in order, from a pattern (the last page of `size` possibly short). */
function pageBytes(offsets: number[], pageSize: number, size: number): Uint8Array {
  const lengths = offsets.map((offset) => Math.min(pageSize, size - offset));
  return patternBytes(lengths.reduce((a, b) => a + b, 0), 11);
}

/** Runs `body` with a region of `size` bytes and a loopback pair, and closes both after. */
async function withRegionAndPair(size: number, body: (region: Region, pair: Pair) => Promise<void>): Promise<void> {
  const region = Region.allocate(size);
  const pair = await channelPair();
  try {
    await body(region, pair);
  } finally {
    pair.close();
    await region.close();
  }
}

describe("readPagesSync", () => {
  test("lands each page at its offset (populated first), the short last page included, and nothing else", async () => {
    const pageSize = 4096;
    const size = 10 * pageSize - 100; // the last page is short
    const offsets = [0, 1, 2, 5, 9, 7].map((page) => page * pageSize); // runs merge; any order
    await withRegionAndPair(size, async (region, pair) => {
      region.view().fill(0xee);
      const data = pageBytes(offsets, pageSize, size);
      await pair.client.writev([data]);
      const before = pair.server.stats.bytesRead;
      // populate: each range faulted in first (MADV_POPULATE_WRITE), as for a file region.
      assert.equal(pair.server.readPagesSync(region.descriptor, pageSize, new Float64Array(offsets), 6, true), true);
      assert.equal(pair.server.stats.bytesRead - before, data.length);
      let at = 0;
      for (const offset of offsets) {
        const length = Math.min(pageSize, size - offset);
        assert.deepEqual(region.view(offset, length), data.subarray(at, at + length), `page at ${offset}`);
        at += length;
      }
      for (const untouched of [3, 4, 6, 8]) {
        assert.ok(region.view(untouched * pageSize, pageSize).every((b) => b === 0xee), `page ${untouched} untouched`);
      }
    });
  });

  test("more ranges than one recvmsg takes (IOV_MAX) arrive in order", async () => {
    const pageSize = 32; // small pages: 2,100 separate ranges in a few dozen KiB
    const pages = 2100;
    const size = 2 * pages * pageSize;
    const offsets = Array.from({ length: pages }, (_, i) => 2 * i * pageSize); // every other page: no merging
    await withRegionAndPair(size, async (region, pair) => {
      const data = pageBytes(offsets, pageSize, size);
      await pair.client.writev([data]);
      assert.equal(
        pair.server.readPagesSync(region.descriptor, pageSize, new Float64Array(offsets), pages, false),
        true,
      );
      offsets.forEach((offset, i) => {
        assert.deepEqual(region.view(offset, pageSize), data.subarray(i * pageSize, (i + 1) * pageSize), `page ${i}`);
      });
    });
  });

  test("the peer ending the stream early: false, with what arrived in place", async () => {
    const pageSize = 4096;
    await withRegionAndPair(4 * pageSize, async (region, pair) => {
      const data = pageBytes([0], pageSize, 4 * pageSize);
      await pair.client.writev([data]); // one page of the three asked for
      pair.client.close();
      const offsets = new Float64Array([0, pageSize, 2 * pageSize]);
      assert.equal(pair.server.readPagesSync(region.descriptor, pageSize, offsets, 3, false), false);
      assert.deepEqual(region.view(0, pageSize), data);
    });
  });

  test("an offset outside the memory, or one that is not whole, is refused before any byte is read", async () => {
    const pageSize = 4096;
    await withRegionAndPair(2 * pageSize, async (region, pair) => {
      region.view().fill(0x5a);
      const data = patternBytes(2 * pageSize, 3);
      await pair.client.writev([data]);
      for (const bad of [2 * pageSize, 3 * pageSize, 0.5, -pageSize, NaN]) {
        assert.throws(
          () => pair.server.readPagesSync(region.descriptor, pageSize, new Float64Array([0, bad]), 2, false),
          InvalidArgumentError,
          `offset ${bad}`,
        );
      }
      assert.throws(
        () => pair.server.readPagesSync(region.descriptor, pageSize, new Float64Array(1), 2, false),
        InvalidArgumentError,
      );
      assert.ok(region.view().every((b) => b === 0x5a), "nothing was written");
      const rest = new Uint8Array(data.length);
      assert.equal(pair.server.readFullSync(rest), data.length, "nothing was consumed from the socket");
      assert.deepEqual(rest, data);
    });
  });
});
