// wire_reads.ts readWirePagesSync: a data packet in one native call (zig/transfer.zig
// zc_recv_wire_pages: its offsets received or taken from its header, decoded and checked by
// the packet layout's rules, its pages read straight into their places, the next header read
// ahead), over real loopback sockets. The data is written before the read starts (the sizes
// fit the socket buffers), so the blocking read cannot wait on a writer in the same thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ChannelClosedError, InvalidArgumentError } from "../src/errors.ts";
import { Region } from "../src/region.ts";
import { readWirePagesSync, readWireRunSync, WireLayout, type WirePacket, wireRunRule } from "../src/wire_reads.ts";
import { moduleRunRule } from "../src/multifd/plain_codec.ts";
import { encodePacketHeader, PacketType } from "../src/multifd/wire.ts";
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

const PAGE = 4096;
const AT = 16;
const HEADER_BYTES = 64; // room for 6 offsets after byte 16
/** A run's counts before its call. */
const NOTHING_YET = { packets: 0, normalPages: 0, zeroPages: 0, payloadBytes: 0 };
/** A QEMU-like rule for this file's 64-byte headers (readWireRunSync's tests say which bytes mean what). */
const QEMU_LIKE_RULE = {
  headerLength: HEADER_BYTES,
  offsetsAt: AT,
  varyFrom: 4,
  varyTo: 16,
  normalAt: 4,
  zeroAt: 8,
  maxCount: 6,
  maxPackets: 8,
  layout: WireLayout.qemu,
};

/** A packet into `region`: QEMU's layout, 4 KiB pages, a 64-byte header with its offsets at byte 16, unless `fields` say otherwise. */
function wirePacket(region: Region, fields: Partial<WirePacket>): WirePacket {
  return {
    memory: region.descriptor,
    pageSize: PAGE,
    wire: new Uint8Array(HEADER_BYTES),
    at: AT,
    count: 0,
    normalCount: 0,
    offsets: new Float64Array(8),
    layout: WireLayout.qemu,
    payloadBytes: 0,
    aheadLength: 0,
    ...fields,
  };
}

describe("readWirePagesSync", () => {
  /** A QEMU packet whose `count` offsets are in `wire` already, `normal` of them with data. */
  const qemuPacket = (pair: Pair, region: Region, wire: Uint8Array, count: number, normal: number, ahead: number) =>
    readWirePagesSync(pair.server, wirePacket(region, { wire, count, normalCount: normal, aheadLength: ahead }), false);

  test("decodes the offsets, lands the pages with data, and reads the next header into the same buffer", async () => {
    const offsets = [3, 0, 1, 7, 5].map((page) => page * PAGE); // the last two: zero pages, not read
    await withRegionAndPair(8 * PAGE, async (region, pair) => {
      region.view().fill(0xee);
      const wire = wireHeader(HEADER_BYTES, AT, offsets);
      const data = pageBytes(offsets.slice(0, 3), PAGE, 8 * PAGE);
      const nextHeader = patternBytes(HEADER_BYTES, 9);
      await pair.client.writev([data, nextHeader]);
      const packet = wirePacket(region, { wire, count: 5, normalCount: 3, aheadLength: HEADER_BYTES });
      const before = pair.server.stats.bytesRead;
      assert.equal(readWirePagesSync(pair.server, packet, true), HEADER_BYTES); // populated first
      assert.equal(pair.server.stats.bytesRead - before, data.length + HEADER_BYTES);
      assert.deepEqual([...packet.offsets.subarray(0, 5)], offsets);
      assert.deepEqual(wire, nextHeader);
      offsets.slice(0, 3).forEach((offset, i) => {
        assert.deepEqual(region.view(offset, PAGE), data.subarray(i * PAGE, (i + 1) * PAGE));
      });
      for (const untouched of [2, 4, 5, 6, 7]) {
        assert.ok(region.view(untouched * PAGE, PAGE).every((b) => b === 0xee), `page ${untouched} untouched`);
      }
    });
  });

  test("no read ahead when asked for none: the bytes after the pages stay in the socket", async () => {
    await withRegionAndPair(2 * PAGE, async (region, pair) => {
      const data = pageBytes([0, PAGE], PAGE, 2 * PAGE);
      await pair.client.writev([data, new Uint8Array(3)]);
      const wire = wireHeader(HEADER_BYTES, AT, [PAGE]);
      assert.equal(qemuPacket(pair, region, wire, 1, 1, 0), 0);
      assert.deepEqual(region.view(PAGE, PAGE), data.subarray(0, PAGE));
      assert.deepEqual(wire, wireHeader(HEADER_BYTES, AT, [PAGE]), "no byte read into the header");
      pair.client.close();
      assert.equal(qemuPacket(pair, region, wireHeader(HEADER_BYTES, AT, [0]), 1, 1, 0), 0);
      const rest = new Uint8Array(3);
      assert.equal(pair.server.readFullSync(rest), 3, "the 3 bytes after the pages are still there");
    });
  });

  test("the peer ending the stream after the pages: 0 bytes ahead; inside the next header or the pages: ChannelClosedError", async () => {
    for (const [tail, outcome] of [[0, 0], [10, "closed"], [-1, "closed"]] as const) {
      await withRegionAndPair(2 * PAGE, async (region, pair) => {
        const data = pageBytes([0, PAGE], PAGE, 2 * PAGE);
        const sent = tail < 0 ? data.subarray(0, PAGE + 100) : data;
        await pair.client.writev([sent, new Uint8Array(Math.max(tail, 0))]);
        pair.client.close();
        const read = () => qemuPacket(pair, region, wireHeader(HEADER_BYTES, AT, [0, PAGE]), 2, 2, HEADER_BYTES);
        if (outcome === 0) assert.equal(read(), 0);
        else assert.throws(read, ChannelClosedError, `tail ${tail}`);
      });
    }
  });

  test("an offset that is not a whole page inside the memory: rejected by index, nothing read or written", async () => {
    const size = 4 * PAGE;
    await withRegionAndPair(size, async (region, pair) => {
      region.view().fill(0x5a);
      const data = patternBytes(2 * PAGE, 3);
      await pair.client.writev([data]);
      for (const bad of [size, size - PAGE + 8, 100, 2 ** 64 - PAGE]) {
        const got = qemuPacket(pair, region, wireHeader(HEADER_BYTES, AT, [0, PAGE, bad]), 3, 2, HEADER_BYTES);
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
    const size = 6 * PAGE - 96; // the last page holds 4000 bytes
    /** The module's packet into `region`: its offsets received after a 32-byte header, the next header read ahead. */
    const modulePacket = (region: Region, fields: Partial<WirePacket>) =>
      wirePacket(region, {
        wire: new Uint8Array(32 + 8 * 8),
        at: 32,
        layout: WireLayout.module,
        aheadLength: 32,
        ...fields,
      });

    test("offsets, then pages (the short last one included), then the next header", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        const normal = [1, 2, 5].map((page) => page * PAGE);
        const data = pageBytes(normal, PAGE, size);
        const nextHeader = patternBytes(32, 4);
        await pair.client.writev([offsetBytes([...normal, 0, 3 * PAGE]), data, nextHeader]);
        const packet = modulePacket(region, { count: 5, normalCount: 3, payloadBytes: data.length });
        const before = pair.server.stats.bytesRead;
        assert.equal(readWirePagesSync(pair.server, packet, false), 32);
        assert.equal(pair.server.stats.bytesRead - before, 5 * 8 + data.length + 32);
        assert.deepEqual([...packet.offsets.subarray(0, 5)], [...normal, 0, 3 * PAGE]);
        assert.deepEqual(packet.wire.subarray(0, 32), nextHeader);
        assert.deepEqual(region.view(5 * PAGE), data.subarray(2 * PAGE), "the short last page");
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
        const packet = modulePacket(region, {
          pageSize: small,
          wire: new Uint8Array(32 + 8 * pages),
          count: pages,
          normalCount: pages,
          offsets: new Float64Array(pages),
          payloadBytes: data.length,
          aheadLength: 0,
        });
        assert.equal(readWirePagesSync(pair.server, packet, true), 0); // MADV_POPULATE_WRITE per range
        offsets.forEach((offset, i) => {
          assert.deepEqual(region.view(offset, small), data.subarray(i * small, (i + 1) * small), `page ${i}`);
          assert.ok(region.view(offset + small, small).every((b) => b === 0xee), `the page after ${i} untouched`);
        });
      });
    });

    test("a page size that is not a whole number: InvalidArgumentError, nothing read", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        await pair.client.writev([offsetBytes([0]), patternBytes(PAGE, 2)]);
        const read = (pageSize: number) => () =>
          readWirePagesSync(
            pair.server,
            modulePacket(region, { pageSize, count: 1, normalCount: 1, payloadBytes: PAGE, aheadLength: 0 }),
            false,
          );
        assert.throws(read(0.5), InvalidArgumentError);
        assert.throws(read(0), InvalidArgumentError);
        assert.equal(pair.server.stats.bytesRead, 0, "nothing was read");
        assert.equal(read(PAGE)(), 0);
      });
    });

    test("out of order, in both lists, outside the region, or a payload the pages do not hold: rejected", async () => {
      const cases: [number[], number[], number, unknown][] = [
        [[2 * PAGE, PAGE], [], 2 * PAGE, { reason: "offset", index: 1 }],
        [[PAGE], [PAGE], PAGE, { reason: "bothLists", index: 0 }],
        [[6 * PAGE], [], PAGE, { reason: "offset", index: 0 }],
        [[PAGE + 8], [], PAGE, { reason: "offset", index: 0 }],
        [[PAGE, 5 * PAGE], [], 2 * PAGE, { reason: "payload", pagesHold: 2 * PAGE - 96 }],
      ];
      for (const [normal, zero, payloadBytes, expected] of cases) {
        await withRegionAndPair(size, async (region, pair) => {
          region.view().fill(0x5a);
          await pair.client.writev([offsetBytes([...normal, ...zero]), patternBytes(2 * PAGE, 1)]);
          const packet = modulePacket(region, {
            count: normal.length + zero.length,
            normalCount: normal.length,
            payloadBytes,
          });
          assert.deepEqual(readWirePagesSync(pair.server, packet, false), expected, `${normal} / ${zero}`);
          assert.ok(region.view().every((b) => b === 0x5a), "nothing was written");
        });
      }
    });

    test("the peer ending the stream inside the offsets: ChannelClosedError", async () => {
      await withRegionAndPair(size, async (region, pair) => {
        await pair.client.writev([offsetBytes([0, PAGE]).subarray(0, 12)]);
        pair.client.close();
        const packet = modulePacket(region, { count: 2, normalCount: 2, payloadBytes: 2 * PAGE });
        assert.throws(() => readWirePagesSync(pair.server, packet, false), ChannelClosedError);
      });
    });
  });
});

describe("readWireRunSync", () => {
  // A layout of this test's own (zig/ knows no format): 64-byte headers, counts of pages with
  // data and of zero pages as big-endian u32 at 4 and 8 — the only bytes of the fixed part
  // that may change within a run, with a packet number at 12 — offsets from byte 16.
  const fields = QEMU_LIKE_RULE;
  const rule = (maxPackets = 8) => wireRunRule({ ...fields, maxPackets });
  const header = (offsets: number[], normal: number, tag = 7, number = 0) => {
    const wire = wireHeader(HEADER_BYTES, AT, offsets);
    const view = new DataView(wire.buffer);
    view.setUint32(0, tag);
    view.setUint32(4, normal);
    view.setUint32(8, offsets.length - normal);
    view.setUint32(12, number);
    return wire;
  };
  const run = (maxPackets?: number) => ({ rule: rule(maxPackets), ...NOTHING_YET });

  test("receives packets while their headers continue the first; the first other header comes back", async () => {
    await withRegionAndPair(8 * PAGE, async (region, pair) => {
      region.view().fill(0xee);
      const first = header([0, 5 * PAGE], 1); // page 5: a zero page
      const second = header([PAGE, 2 * PAGE, 3 * PAGE], 3, 7, 1);
      const other = header([4 * PAGE], 1, 8); // another tag: not part of the run
      const data = [pageBytes([0], PAGE, 8 * PAGE), pageBytes([PAGE, 2 * PAGE, 3 * PAGE], PAGE, 8 * PAGE)];
      await pair.client.writev([data[0], second, data[1], other]);
      const packet = wirePacket(region, { wire: first });
      const got = run();
      const before = pair.server.stats.bytesRead;
      assert.equal(readWireRunSync(pair.server, packet, got, true), HEADER_BYTES);
      assert.deepEqual([got.packets, got.normalPages, got.zeroPages, got.payloadBytes], [2, 4, 1, 4 * PAGE]);
      assert.equal(pair.server.stats.bytesRead - before, 4 * PAGE + 2 * HEADER_BYTES);
      assert.deepEqual(packet.wire, other, "the header that ended the run is in the wire buffer");
      assert.deepEqual(region.view(0, PAGE), data[0]);
      assert.deepEqual(region.view(PAGE, 3 * PAGE), data[1]);
      assert.ok(region.view(5 * PAGE, PAGE).every((b) => b === 0), "the zero page zeroed");
      for (const untouched of [4, 6, 7]) {
        assert.ok(region.view(untouched * PAGE, PAGE).every((b) => b === 0xee), `page ${untouched} untouched`);
      }
    });
  });

  test("stops after the rule's packet count, at the end of the stream, and at counts beyond the limit", async () => {
    await withRegionAndPair(8 * PAGE, async (region, pair) => {
      const page = pageBytes([0], PAGE, 8 * PAGE);
      const tooMany = header([0, 0, 0, 0, 0, 0], 6);
      new DataView(tooMany.buffer).setUint32(8, 1); // 6 + 1 pages listed, 6 allowed
      await pair.client.writev([page, header([0], 1), page, header([0], 1), page, tooMany]);
      const got = run(2);
      assert.equal(
        readWireRunSync(pair.server, wirePacket(region, { wire: header([0], 1) }), got, false),
        HEADER_BYTES,
      );
      assert.equal(got.packets, 2, "the rule's packet count");
      const wire = header([0], 1);
      assert.equal(readWireRunSync(pair.server, wirePacket(region, { wire }), got, false), HEADER_BYTES);
      assert.deepEqual([got.packets, wire], [1, tooMany], "a header listing more pages than allowed ends the run");
      await pair.client.writev([page]);
      pair.client.close();
      assert.equal(readWireRunSync(pair.server, wirePacket(region, { wire: header([0], 1) }), got, false), 0);
      assert.equal(got.packets, 1, "the end of the stream between packets");
    });
  });

  test("an offset outside the memory in a later header: rejected by index, its pages not read", async () => {
    await withRegionAndPair(4 * PAGE, async (region, pair) => {
      region.view().fill(0x5a);
      const page = pageBytes([0], PAGE, 4 * PAGE);
      await pair.client.writev([page, header([PAGE, 4 * PAGE], 2), patternBytes(2 * PAGE, 1)]);
      const got = run();
      const result = readWireRunSync(pair.server, wirePacket(region, { wire: header([0], 1) }), got, false);
      assert.deepEqual([result, got.packets], [{ reason: "offset", index: 1 }, 1]);
      assert.deepEqual(region.view(0, PAGE), page);
      assert.ok(region.view(PAGE).every((b) => b === 0x5a), "nothing of the rejected packet written");
      const rest = new Uint8Array(2 * PAGE);
      assert.equal(pair.server.readFullSync(rest), rest.length, "its pages are still in the socket");
    });
  });

  test("the peer ending the stream inside a later packet's pages: ChannelClosedError", async () => {
    await withRegionAndPair(4 * PAGE, async (region, pair) => {
      const page = pageBytes([0], PAGE, 4 * PAGE);
      await pair.client.writev([page, header([PAGE, 2 * PAGE], 2), page]);
      pair.client.close();
      const read = () => readWireRunSync(pair.server, wirePacket(region, { wire: header([0], 1) }), run(), false);
      assert.throws(read, ChannelClosedError);
    });
  });

  test("a rule that is not valid, or a first header listing more than it allows: InvalidArgumentError, nothing read", async () => {
    await withRegionAndPair(4 * PAGE, async (region, pair) => {
      await pair.client.writev([new Uint8Array(10)]);
      const invalid = [
        wireRunRule({ ...fields, varyTo: 20 }), // varying bytes past the offsets' start
        wireRunRule({ ...fields, normalAt: 14 }), // a count not inside the varying bytes
        wireRunRule({ ...fields, maxCount: 7 }), // 7 offsets do not fit in the header
        wireRunRule({ ...fields, maxPackets: 0 }), // no packet per call
        wireRunRule({ ...fields, sequenceAt: 12 }), // a sequence number not inside the varying bytes
        wireRunRule({ ...fields, layout: WireLayout.module, payloadAt: 12 }), // offsets in the socket, not after the header
        wireRunRule({ ...fields, layout: 4 as WireLayout }), // a layout bit of no meaning
        rule().subarray(0, 8), // too few words
      ];
      for (const words of invalid) {
        const got = { rule: words, ...NOTHING_YET };
        assert.throws(
          () => readWireRunSync(pair.server, wirePacket(region, { wire: header([0], 1) }), got, false),
          InvalidArgumentError,
          `rule ${words}`,
        );
      }
      const overfull = header([0, 0, 0, 0, 0, 0], 6);
      new DataView(overfull.buffer).setUint32(8, 1);
      assert.throws(
        () => readWireRunSync(pair.server, wirePacket(region, { wire: overfull }), run(), false),
        InvalidArgumentError,
      );
      const rest = new Uint8Array(10);
      assert.equal(pair.server.readFullSync(rest), 10, "nothing was consumed from the socket");
    });
  });
});

describe("readWireRunSync, the module's packets (plain_codec.ts moduleRunRule)", () => {
  // The module's layout: a 32-byte header (docs/PROTOCOL.md), its offsets after it in the
  // socket, each list ascending, the pages with data holding the header's payload bytes.
  const size = 9 * PAGE + 100; // a short last page
  const PER_PACKET = 4;
  /** A DATA packet's header numbered `number`, its offsets, and its pages' data. */
  const dataPacket = (number: number, normal: number[], zero: number[] = [], payload?: number) => {
    const data = pageBytes(normal.filter((offset) => offset < size), PAGE, size);
    const header = new Uint8Array(32);
    encodePacketHeader(new DataView(header.buffer), {
      type: PacketType.DATA,
      packetNumber: number,
      normalPages: normal.length,
      zeroPages: zero.length,
      payloadBytes: payload ?? data.length,
      argument: 0,
    });
    return { header, offsets: offsetBytes([...normal, ...zero]), data };
  };
  const controlHeader = (type: number, number: number) => {
    const header = new Uint8Array(32);
    const fields = { type, packetNumber: number, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 0 };
    encodePacketHeader(new DataView(header.buffer), fields);
    return header;
  };
  /** The run's first packet as the codec hands it over: its header validated, in the wire buffer. */
  const firstPacket = (region: Region, header: Uint8Array) => {
    const wire = new Uint8Array(32 + 8 * PER_PACKET);
    wire.set(header);
    return wirePacket(region, {
      wire,
      at: 32,
      offsets: new Float64Array(PER_PACKET),
      layout: WireLayout.module,
      aheadLength: 32,
    });
  };
  const run = (maxPackets = 8) => ({ rule: moduleRunRule(PER_PACKET, maxPackets), ...NOTHING_YET });

  test("consecutive DATA packets in one call (zero pages, the short last page); the SYNC after them comes back", async () => {
    await withRegionAndPair(size, async (region, pair) => {
      region.view().fill(0xee);
      const packets = [
        dataPacket(7, [0, PAGE], [2 * PAGE]),
        dataPacket(8, [3 * PAGE, 9 * PAGE]),
        dataPacket(9, [], [4 * PAGE, 5 * PAGE]),
      ];
      const sync = controlHeader(PacketType.SYNC, 10);
      const stream = packets.flatMap((p, i) => [...(i > 0 ? [p.header] : []), p.offsets, p.data]);
      await pair.client.writev([...stream, sync]);
      const packet = firstPacket(region, packets[0].header);
      const got = run();
      const before = pair.server.stats.bytesRead;
      assert.equal(readWireRunSync(pair.server, packet, got, false), 32);
      const payload = packets[0].data.length + packets[1].data.length;
      assert.deepEqual([got.packets, got.normalPages, got.zeroPages, got.payloadBytes], [3, 4, 3, payload]);
      assert.equal(pair.server.stats.bytesRead - before, 3 * 32 + 7 * 8 + payload, "offsets, pages, headers");
      assert.deepEqual(packet.wire.subarray(0, 32), sync, "the SYNC's header is in the wire buffer");
      assert.deepEqual(region.view(0, 2 * PAGE), packets[0].data);
      assert.deepEqual(region.view(3 * PAGE, PAGE), packets[1].data.subarray(0, PAGE));
      assert.deepEqual(region.view(9 * PAGE), packets[1].data.subarray(PAGE), "the short last page");
      for (const zero of [2, 4, 5]) {
        assert.ok(region.view(zero * PAGE, PAGE).every((b) => b === 0), `zero page ${zero}`);
      }
      for (const untouched of [6, 7, 8]) {
        assert.ok(region.view(untouched * PAGE, PAGE).every((b) => b === 0xee), `page ${untouched} untouched`);
      }
    });
  });

  test("a header numbered out of turn, listing too many pages, or with an argument ends the run, unread past it", async () => {
    const breakers = {
      "a number skipped": dataPacket(9, [PAGE]).header,
      "a number repeated": dataPacket(7, [PAGE]).header,
      "five pages of four": dataPacket(8, [PAGE, 2 * PAGE, 3 * PAGE, 4 * PAGE], [5 * PAGE]).header,
      "an argument": (() => {
        const header = dataPacket(8, [PAGE]).header;
        header[31] = 1;
        return header;
      })(),
    };
    for (const [name, breaker] of Object.entries(breakers)) {
      await withRegionAndPair(size, async (region, pair) => {
        const first = dataPacket(7, [0]);
        await pair.client.writev([first.offsets, first.data, breaker, patternBytes(100, 3)]);
        const packet = firstPacket(region, first.header);
        const got = run();
        assert.equal(readWireRunSync(pair.server, packet, got, false), 32, name);
        assert.equal(got.packets, 1, name);
        assert.deepEqual(packet.wire.subarray(0, 32), breaker, name);
        const rest = new Uint8Array(100);
        assert.equal(pair.server.readFullSync(rest), 100, `${name}: nothing read past its header`);
      });
    }
  });

  test("the rule's packet count, and the end of the stream between packets", async () => {
    await withRegionAndPair(size, async (region, pair) => {
      const packets = [0, 1, 2].map((n) => dataPacket(n, [n * PAGE]));
      await pair.client.writev(packets.flatMap((p, i) => [...(i > 0 ? [p.header] : []), p.offsets, p.data]));
      pair.client.close();
      const got = run(2);
      const packet = firstPacket(region, packets[0].header);
      assert.equal(readWireRunSync(pair.server, packet, got, false), 32);
      assert.equal(got.packets, 2, "two a call");
      assert.deepEqual(packet.wire.subarray(0, 32), packets[2].header);
      assert.equal(readWireRunSync(pair.server, packet, got, false), 0, "the stream ended after the third");
      assert.equal(got.packets, 1);
    });
  });

  test("a later packet's offsets out of order, in both lists, or not holding its payload: rejected, nothing of it written", async () => {
    const cases: [ReturnType<typeof dataPacket>, unknown][] = [
      [dataPacket(1, [2 * PAGE, PAGE]), { reason: "offset", index: 1 }],
      [dataPacket(1, [PAGE], [PAGE]), { reason: "bothLists", index: 0 }],
      [dataPacket(1, [10 * PAGE], [], PAGE), { reason: "offset", index: 0 }],
      [dataPacket(1, [PAGE, 9 * PAGE], [], 2 * PAGE), { reason: "payload", pagesHold: PAGE + 100 }],
    ];
    for (const [bad, expected] of cases) {
      await withRegionAndPair(size, async (region, pair) => {
        region.view().fill(0x5a);
        const first = dataPacket(0, [0]);
        await pair.client.writev([first.offsets, first.data, bad.header, bad.offsets, patternBytes(2 * PAGE, 1)]);
        const packet = firstPacket(region, first.header);
        const got = run();
        assert.deepEqual(readWireRunSync(pair.server, packet, got, false), expected);
        assert.equal(got.packets, 1, "the first packet arrived");
        assert.deepEqual(packet.wire.subarray(0, 32), bad.header, "the rejected packet's header is in place");
        assert.deepEqual(region.view(0, PAGE), first.data);
        assert.ok(region.view(PAGE).every((b) => b === 0x5a), "nothing of the rejected packet written");
      });
    }
  });

  test("the peer ending the stream inside a later packet's offsets: ChannelClosedError", async () => {
    await withRegionAndPair(size, async (region, pair) => {
      const first = dataPacket(0, [0]);
      const second = dataPacket(1, [PAGE, 2 * PAGE]);
      await pair.client.writev([first.offsets, first.data, second.header, second.offsets.subarray(0, 12)]);
      pair.client.close();
      const read = () => readWireRunSync(pair.server, firstPacket(region, first.header), run(), false);
      assert.throws(read, ChannelClosedError);
    });
  });

  test("a wire buffer without room for the most offsets a packet may list: InvalidArgumentError", async () => {
    await withRegionAndPair(size, async (region, pair) => {
      await pair.client.writev([patternBytes(10, 2)]);
      const packet = wirePacket(region, { wire: new Uint8Array(32 + 8 * (PER_PACKET - 1)), layout: WireLayout.module });
      assert.throws(() => readWireRunSync(pair.server, packet, run(), false), InvalidArgumentError);
      assert.equal(pair.server.readFullSync(new Uint8Array(10)), 10, "nothing was consumed from the socket");
    });
  });
});

describe("the channel's conditions for a native packet read", () => {
  test("refused while the channel's zero-copy sends are outstanding (InvalidArgumentError, nothing read); after a flush, read", async () => {
    const region = Region.allocate(2 * PAGE);
    const pair = await channelPair({}, { zerocopy: true });
    try {
      assert.ok(pair.server.zerocopy, "SO_ZEROCOPY on a loopback socket");
      pair.server.writevZerocopySync([new Uint8Array(PAGE)]); // unflushed: a completion may raise POLLERR
      const page = pageBytes([0], PAGE, 2 * PAGE);
      await pair.client.writev([page]);
      const wire = wireHeader(HEADER_BYTES, AT, [0]);
      const packet = () => wirePacket(region, { wire, count: 1, normalCount: 1 });
      const run = { rule: wireRunRule(QEMU_LIKE_RULE), ...NOTHING_YET };
      assert.throws(() => readWirePagesSync(pair.server, packet(), false), /readWirePagesSync: flush/);
      assert.throws(() => readWireRunSync(pair.server, packet(), run, false), InvalidArgumentError);
      assert.equal(pair.server.stats.bytesRead, 0);
      pair.server.flushZerocopySync();
      assert.equal(readWirePagesSync(pair.server, packet(), false), 0);
      assert.deepEqual(region.view(0, PAGE), page.subarray(0, PAGE));
      assert.equal(pair.server.stats.bytesRead, PAGE, "the read is the channel's, in its counters");
      pair.server.close();
      assert.throws(() => readWirePagesSync(pair.server, packet(), false), ChannelClosedError);
    } finally {
      pair.close();
      await region.close();
    }
  });
});
