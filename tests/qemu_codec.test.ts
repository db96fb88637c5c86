// QEMU's receive codec (src/qemu/qemu_codec.ts) over a real loopback socket: one native call
// per run of data packets, each packet's next header read ahead with its pages — never after
// a SYNC, whose next packet may come only once every channel reached the barrier — the run
// going on while a header repeats every field the codec validated, and the end of the channel
// found by that read ahead. Each test writes what the reads need before reading (it fits the socket
// buffers), so a read ahead that should not happen fails on the channel's short I/O timeout.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Incoming, PacketInput } from "../src/multifd/codec.ts";
import { qemuFormat } from "../src/qemu/qemu_codec.ts";
import { encodeMultifdPacket, QEMU_PAGE_SIZE } from "../src/qemu/wire.ts";
import { ProtocolError } from "../src/multifd/wire.ts";
import { Region } from "../src/region.ts";
import type { SocketChannel } from "../src/socket_channel.ts";
import { readWirePagesSync, readWireRunSync } from "../src/wire_reads.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes } from "./helpers/pattern.ts";

const BLOCK = "pc.ram";
const PAGES = 16;

/** What the channel Worker gives a codec (multifd/channel_worker.ts ChannelEnd), on `channel`. */
function inputOf(channel: SocketChannel): PacketInput {
  return {
    read: (addresses, lengths, endAllowed = false) => {
      const total = lengths.reduce((a, b) => a + b, 0);
      const got = channel.readRangesSync(addresses, lengths);
      if (got === 0 && endAllowed) return false;
      assert.equal(got, total, "the peer closed the connection early");
      return true;
    },
    readWirePages: (packet) => readWirePagesSync(channel, packet, false),
    readWireRun: (packet, run) => readWireRunSync(channel, packet, run, false),
  };
}

/** A packet: its header (the pages at `pages`, the last `zero` of them listed as zero pages), then their data. */
function packet(pages: number[], number: number, { sync = false, zero = 0 } = {}): Uint8Array[] {
  const header = encodeMultifdPacket(BLOCK, pages.map((page) => page * QEMU_PAGE_SIZE), pages.length, number, sync);
  const view = new DataView(header.buffer);
  view.setUint32(16, pages.length - zero); // normal_pages
  view.setUint32(32, zero); // zero_pages (QEMU ≥ 9.0)
  return [header, pageData(pages.slice(0, pages.length - zero))];
}

const pageData = (pages: number[]) => patternBytes(pages.length * QEMU_PAGE_SIZE, pages[0] ?? 0);

async function withCodec(
  body: (next: () => Incoming, client: SocketChannel, region: Region) => Promise<void>,
): Promise<void> {
  const region = Region.allocate(PAGES * QEMU_PAGE_SIZE);
  const pair = await channelPair({}, { ioTimeoutMs: 500 });
  try {
    const codec = qemuFormat.receiver(
      {
        channelId: 0,
        pageSize: QEMU_PAGE_SIZE,
        pagesPerPacket: 128,
        qemu: { ramBlocks: [{ name: BLOCK, region: region.descriptor }] },
      },
      region.descriptor,
      () => {},
    );
    const input = inputOf(pair.server);
    await body(() => codec.next(input), pair.client, region);
  } finally {
    pair.close();
    await region.close();
  }
}

describe("QEMU receive codec", () => {
  test("reads each packet's next header with its pages, but not after a SYNC; the end found by the read ahead", async () => {
    await withCodec(async (next, client, region) => {
      await client.writev([...packet([0, 1], 0), ...packet([5], 1, { sync: true })]);
      const data = { kind: "data", packets: 1, normalPages: 2, zeroPages: 0, payloadBytes: 2 * QEMU_PAGE_SIZE };
      assert.deepEqual(next(), data); // the run ends at the SYNC's header
      // A read ahead after this SYNC would wait for bytes that are not there: TimeoutError after 500 ms.
      assert.deepEqual(next(), { kind: "sync", syncNumber: 0, normalPages: 1, payloadBytes: QEMU_PAGE_SIZE });
      assert.deepEqual(region.view(0, 2 * QEMU_PAGE_SIZE), pageData([0, 1]));
      assert.deepEqual(region.view(5 * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE), pageData([5]));
      await client.writev(packet([9], 2));
      client.close();
      assert.equal(next().kind, "data"); // its read ahead finds the end of the stream
      assert.deepEqual(next(), { kind: "end" });
      assert.deepEqual(next(), { kind: "end" });
      assert.deepEqual(region.view(9 * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE), pageData([9]));
    });
  });

  test("zero pages listed in a packet (QEMU ≥ 9.0) are zeroed after the read ahead overwrote the header", async () => {
    await withCodec(async (next, client, region) => {
      region.view().fill(0xff);
      // The second packet lists pages 3 and 7 again, with data: the first's zero-fill came before it.
      await client.writev([...packet([2, 3, 7], 0, { zero: 2 }), ...packet([4, 6], 1, { zero: 1 })]);
      client.close();
      const run = { kind: "data", packets: 2, normalPages: 2, zeroPages: 3, payloadBytes: 2 * QEMU_PAGE_SIZE };
      assert.deepEqual(next(), run);
      assert.deepEqual(next(), { kind: "end" });
      assert.deepEqual(region.view(2 * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE), pageData([2]));
      assert.deepEqual(region.view(4 * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE), pageData([4]));
      for (const zero of [3, 6, 7]) {
        assert.ok(region.view(zero * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE).every((b) => b === 0), `page ${zero} zeroed`);
      }
      assert.ok(region.view(5 * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE).every((b) => b === 0xff), "page 5 untouched");
    });
  });

  test("a run goes on while headers repeat the validated fields; any other header is parsed on its own", async () => {
    await withCodec(async (next, client, region) => {
      // An unused byte changed: the run stops there, the codec's parse accepts the header, and
      // a run of headers like it follows.
      const [unusedChanged, followsIt] = [packet([8], 3), packet([9], 7)];
      unusedChanged[0][40] = followsIt[0][40] = 1;
      await client.writev([...packet([0], 0), ...packet([1, 2], 1), ...packet([3], 2), ...unusedChanged]);
      await client.writev([...followsIt, ...packet([10, 11], 4, { sync: true })]);
      const one = (packets: number, pages: number) => ({
        kind: "data",
        packets,
        normalPages: pages,
        zeroPages: 0,
        payloadBytes: pages * QEMU_PAGE_SIZE,
      });
      assert.deepEqual(next(), one(3, 4)); // packet numbers and counts may change within a run
      assert.deepEqual(next(), one(2, 2)); // the changed header starts a run of its own
      assert.deepEqual(next(), { kind: "sync", syncNumber: 0, normalPages: 2, payloadBytes: 2 * QEMU_PAGE_SIZE });
      // Each packet's first page (pageData of a packet starts with that of its first page alone).
      for (const page of [0, 1, 3, 8, 9, 10]) {
        assert.deepEqual(region.view(page * QEMU_PAGE_SIZE, QEMU_PAGE_SIZE), pageData([page]), `page ${page}`);
      }
    });
  });

  test("a run stops at a header whose counts or flags the codec refuses: ProtocolError, its pages not read", async () => {
    const cases: [string, (header: DataView) => void][] = [
      ["qemu.packet.normalPages", (h) => h.setUint32(32, 128)], // normal + zero pages > pages_alloc
      ["qemu.packet.flags", (h) => h.setUint32(8, 1 << 1)], // compression
      ["qemu.packet.ramBlock", (h) => h.setUint8(64, "x".charCodeAt(0))], // another block's name
    ];
    for (const [field, spoil] of cases) {
      await withCodec(async (next, client, region) => {
        region.view().fill(0xee);
        const bad = packet([1], 1);
        spoil(new DataView(bad[0].buffer));
        await client.writev([...packet([0], 0), ...bad]);
        assert.equal(next().kind, "data");
        assert.throws(next, (e) => e instanceof ProtocolError && e.field === field, field);
        assert.ok(region.view(QEMU_PAGE_SIZE).every((b) => b === 0xee), `${field}: nothing past page 0 written`);
      });
    }
  });

  test("a run returns after 64 packets, so the channel's counters and abort check keep up", async () => {
    await withCodec(async (next, client) => {
      const packets = Array.from({ length: 70 }, (_, i) => packet([i % PAGES], i)).flat();
      await client.writev(packets);
      client.close();
      assert.equal((next() as { packets: number }).packets, 64);
      assert.equal((next() as { packets: number }).packets, 6);
      assert.deepEqual(next(), { kind: "end" });
    });
  });

  test("an offset outside the block, in a header read ahead: ProtocolError naming it, nothing written", async () => {
    await withCodec(async (next, client, region) => {
      region.view().fill(0xee);
      const bad = packet([1], 1)[0];
      new DataView(bad.buffer).setBigUint64(320, BigInt(PAGES * QEMU_PAGE_SIZE)); // one page past the block
      await client.writev([...packet([0], 0), bad, pageData([1])]);
      // The header continues the run (its fixed part is the first's): the run itself finds the offset.
      assert.throws(
        next,
        (e) => e instanceof ProtocolError && e.message.includes(`${PAGES * QEMU_PAGE_SIZE} is not a page of block`),
      );
      assert.ok(region.view(QEMU_PAGE_SIZE).every((b) => b === 0xee), "nothing past page 0 written");
    });
  });
});
