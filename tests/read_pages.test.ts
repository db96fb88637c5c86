// SocketChannel.readWirePagesSync: a data packet in one native call (zig/transfer.zig
// zc_recv_wire_pages: its offsets received or taken from its header, decoded and checked by
// the packet layout's rules, its pages read straight into their places, the next header read
// ahead), over real loopback sockets. The data is written
// before the read starts (the sizes fit the socket buffers), so the blocking read cannot wait
// on a writer in the same thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ChannelClosedError, InvalidArgumentError } from "../src/errors.ts";
import { Region } from "../src/region.ts";
import { WireLayout } from "../src/socket_channel.ts";
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

/** A header of `length` bytes listing `offsets` as big-endian u64 from byte `at`, the rest a pattern. */
function wireHeader(length: number, at: number, offsets: number[]): Uint8Array {
  const wire = patternBytes(length, 5);
  const view = new DataView(wire.buffer);
  offsets.forEach((offset, i) => view.setBigUint64(at + 8 * i, BigInt(offset)));
  return wire;
}

/** `offsets` as the module's packets send them after the header: big-endian u64. */
const offsetBytes = (offsets: number[]) => wireHeader(8 * offsets.length, 0, offsets);

describe("readWirePagesSync", () => {
  const pageSize = 4096;
  const at = 16;
  const headerBytes = 64; // room for 6 offsets after byte 16

  /** A QEMU-style packet whose `count` offsets are in `wire` already, `normal` of them with data. */
  const qemuPacket = (pair: Pair, region: Region, wire: Uint8Array, count: number, normal: number, ahead: number) =>
    pair.server.readWirePagesSync(
      region.descriptor,
      pageSize,
      wire,
      at,
      count,
      normal,
      new Float64Array(8),
      WireLayout.qemu,
      normal * pageSize,
      ahead,
      false,
    );

  test("decodes the offsets, lands the pages with data, and reads the next header into the same buffer", async () => {
    const offsets = [3, 0, 1, 7, 5].map((page) => page * pageSize); // the last two: zero pages, not read
    await withRegionAndPair(8 * pageSize, async (region, pair) => {
      region.view().fill(0xee);
      const wire = wireHeader(headerBytes, at, offsets);
      const data = pageBytes(offsets.slice(0, 3), pageSize, 8 * pageSize);
      const nextHeader = patternBytes(headerBytes, 9);
      await pair.client.writev([data, nextHeader]);
      const decoded = new Float64Array(8);
      const before = pair.server.stats.bytesRead;
      const ahead = pair.server.readWirePagesSync(
        region.descriptor,
        pageSize,
        wire,
        at,
        5,
        3,
        decoded,
        WireLayout.qemu,
        3 * pageSize,
        headerBytes,
        true,
      );
      assert.equal(ahead, headerBytes);
      assert.equal(pair.server.stats.bytesRead - before, data.length + headerBytes);
      assert.deepEqual([...decoded.subarray(0, 5)], offsets);
      assert.deepEqual(wire, nextHeader);
      offsets.slice(0, 3).forEach((offset, i) => {
        assert.deepEqual(region.view(offset, pageSize), data.subarray(i * pageSize, (i + 1) * pageSize));
      });
      for (const untouched of [2, 4, 5, 6, 7]) {
        assert.ok(region.view(untouched * pageSize, pageSize).every((b) => b === 0xee), `page ${untouched} untouched`);
      }
    });
  });

  test("no read ahead when asked for none: the bytes after the pages stay in the socket", async () => {
    await withRegionAndPair(2 * pageSize, async (region, pair) => {
      const data = pageBytes([0, pageSize], pageSize, 2 * pageSize);
      await pair.client.writev([data, new Uint8Array(3)]);
      const wire = wireHeader(headerBytes, at, [pageSize]);
      assert.equal(qemuPacket(pair, region, wire, 1, 1, 0), 0);
      assert.deepEqual(region.view(pageSize, pageSize), data.subarray(0, pageSize));
      assert.deepEqual(wire, wireHeader(headerBytes, at, [pageSize]), "no byte read into the header");
      pair.client.close();
      assert.equal(qemuPacket(pair, region, wireHeader(headerBytes, at, [0]), 1, 1, 0), 0);
      const rest = new Uint8Array(3);
      assert.equal(pair.server.readFullSync(rest), 3, "the 3 bytes after the pages are still there");
    });
  });

  test("the peer ending the stream after the pages: 0 bytes ahead; inside the next header or the pages: ChannelClosedError", async () => {
    for (const [tail, outcome] of [[0, 0], [10, "closed"], [-1, "closed"]] as const) {
      await withRegionAndPair(2 * pageSize, async (region, pair) => {
        const data = pageBytes([0, pageSize], pageSize, 2 * pageSize);
        const sent = tail < 0 ? data.subarray(0, pageSize + 100) : data;
        await pair.client.writev([sent, new Uint8Array(Math.max(tail, 0))]);
        pair.client.close();
        const read = () => qemuPacket(pair, region, wireHeader(headerBytes, at, [0, pageSize]), 2, 2, headerBytes);
        if (outcome === 0) assert.equal(read(), 0);
        else assert.throws(read, ChannelClosedError, `tail ${tail}`);
      });
    }
  });

  test("an offset that is not a whole page inside the memory: rejected by index, nothing read or written", async () => {
    const size = 4 * pageSize;
    await withRegionAndPair(size, async (region, pair) => {
      region.view().fill(0x5a);
      const data = patternBytes(2 * pageSize, 3);
      await pair.client.writev([data]);
      for (const bad of [size, size - pageSize + 8, 100, 2 ** 64 - pageSize]) {
        const got = qemuPacket(pair, region, wireHeader(headerBytes, at, [0, pageSize, bad]), 3, 2, headerBytes);
        assert.deepEqual(got, { reason: "offset", index: 2 }, `offset ${bad}`);
      }
      assert.throws(
        () => qemuPacket(pair, region, new Uint8Array(32), 3, 3, 0),
        InvalidArgumentError,
        "offsets past the end of the header",
      );
      assert.throws(
        () => qemuPacket(pair, region, new Uint8Array(64), 2, 3, 0),
        InvalidArgumentError,
        "more pages with data than offsets",
      );
      assert.ok(region.view().every((b) => b === 0x5a), "nothing was written");
      const rest = new Uint8Array(data.length);
      assert.equal(pair.server.readFullSync(rest), data.length, "nothing was consumed from the socket");
      assert.deepEqual(rest, data);
    });
  });

  describe("the module's layout: offsets received first, each list ascending, the payload exact", () => {
    const size = 6 * pageSize - 96; // the last page holds 4000 bytes
    /** The module's packet with offsets `normal` (with data) and `zero`, `payload` in its header. */
    const modulePacket = (pair: Pair, region: Region, normal: number[], zero: number[], payload: number) =>
      pair.server.readWirePagesSync(
        region.descriptor,
        pageSize,
        new Uint8Array(32 + 8 * 8),
        32,
        normal.length + zero.length,
        normal.length,
        new Float64Array(8),
        WireLayout.module,
        payload,
        32,
        false,
      );

    test("offsets, then pages (the short last one included), then the next header", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        const normal = [1, 2, 5].map((page) => page * pageSize);
        const data = pageBytes(normal, pageSize, size);
        const nextHeader = patternBytes(32, 4);
        await pair.client.writev([offsetBytes([...normal, 0, 3 * pageSize]), data, nextHeader]);
        const wire = new Uint8Array(32 + 8 * 8);
        const decoded = new Float64Array(8);
        const before = pair.server.stats.bytesRead;
        const ahead = pair.server.readWirePagesSync(
          region.descriptor,
          pageSize,
          wire,
          32,
          5,
          3,
          decoded,
          WireLayout.module,
          data.length,
          32,
          false,
        );
        assert.equal(ahead, 32);
        assert.equal(pair.server.stats.bytesRead - before, 5 * 8 + data.length + 32);
        assert.deepEqual([...decoded.subarray(0, 5)], [...normal, 0, 3 * pageSize]);
        assert.deepEqual(wire.subarray(0, 32), nextHeader);
        assert.deepEqual(region.view(5 * pageSize), data.subarray(2 * pageSize), "the short last page");
      });
    });

    test("more ranges than one recvmsg takes (IOV_MAX) arrive in order, each populated first", async () => {
      const small = 32; // small pages: 2,100 separate ranges in a few dozen KiB
      const pages = 2100;
      const offsets = Array.from({ length: pages }, (_, i) => 2 * i * small); // every other page: no merging
      await withRegionAndPair(2 * pages * small, async (region, pair) => {
        region.view().fill(0xee);
        const data = pageBytes(offsets, small, 2 * pages * small);
        await pair.client.writev([offsetBytes(offsets), data]);
        const got = pair.server.readWirePagesSync(
          region.descriptor,
          small,
          new Uint8Array(32 + 8 * pages),
          32,
          pages,
          pages,
          new Float64Array(pages),
          WireLayout.module,
          data.length,
          0,
          true, // MADV_POPULATE_WRITE per range, as for a file region
        );
        assert.equal(got, 0);
        offsets.forEach((offset, i) => {
          assert.deepEqual(region.view(offset, small), data.subarray(i * small, (i + 1) * small), `page ${i}`);
          assert.ok(region.view(offset + small, small).every((b) => b === 0xee), `the page after ${i} untouched`);
        });
      });
    });

    test("a memory, page size or payload that is not a whole number: InvalidArgumentError, nothing read", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        await pair.client.writev([offsetBytes([0]), patternBytes(pageSize, 2)]);
        const read = (pageSizeArg: number, payload: number) => () =>
          pair.server.readWirePagesSync(
            region.descriptor,
            pageSizeArg,
            new Uint8Array(40),
            32,
            1,
            1,
            new Float64Array(1),
            WireLayout.module,
            payload,
            0,
            false,
          );
        assert.throws(read(0.5, pageSize), InvalidArgumentError);
        assert.throws(read(0, pageSize), InvalidArgumentError);
        assert.equal(pair.server.stats.bytesRead, 0, "nothing was read");
        assert.equal(read(pageSize, pageSize)(), 0);
      });
    });

    test("out of order, in both lists, outside the region, or a payload the pages do not hold: rejected", async () => {
      const cases: [number[], number[], number, unknown][] = [
        [[2 * pageSize, pageSize], [], 2 * pageSize, { reason: "offset", index: 1 }],
        [[pageSize], [pageSize], pageSize, { reason: "bothLists", index: 0 }],
        [[6 * pageSize], [], pageSize, { reason: "offset", index: 0 }],
        [[pageSize + 8], [], pageSize, { reason: "offset", index: 0 }],
        [[pageSize, 5 * pageSize], [], 2 * pageSize, { reason: "payload", pagesHold: 2 * pageSize - 96 }],
      ];
      for (const [normal, zero, payload, expected] of cases) {
        await withRegionAndPair(size, async (region, pair) => {
          region.view().fill(0x5a);
          await pair.client.writev([offsetBytes([...normal, ...zero]), patternBytes(2 * pageSize, 1)]);
          assert.deepEqual(modulePacket(pair, region, normal, zero, payload), expected, `${normal} / ${zero}`);
          assert.ok(region.view().every((b) => b === 0x5a), "nothing was written");
        });
      }
    });

    test("the peer ending the stream inside the offsets: ChannelClosedError", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        await pair.client.writev([offsetBytes([0, pageSize]).subarray(0, 12)]);
        pair.client.close();
        assert.throws(() => modulePacket(pair, region, [0, pageSize], [], 2 * pageSize), ChannelClosedError);
      });
    });
  });
});
