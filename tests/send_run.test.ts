// wire_writes.ts sendWireRunSync: a round's data packets in one native call (zig/transfer.zig
// zc_send_run), over real loopback sockets — the same bytes the codec's packet-by-packet path
// sends (the module's format and QEMU's), packets claimed through the shared cursor, zero
// pages listed or handed back, an abort or a full zero list stopping it before a claim. The
// sizes fit the socket buffers, so the blocking send never waits on a reader in this thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { viewOf } from "../ffi/mod.ts";
import { InvalidArgumentError, TimeoutError } from "../src/errors.ts";
import type { Outgoing } from "../src/multifd/codec.ts";
import { PageScan } from "../src/multifd/packet.ts";
import { moduleSendRule, plainFormat } from "../src/multifd/plain_codec.ts";
import { Control } from "../src/multifd/shared_state.ts";
import { qemuFormat } from "../src/qemu/qemu_codec.ts";
import { QEMU_PAGE_SIZE } from "../src/qemu/wire.ts";
import { Region } from "../src/region.ts";
import { type RunRound, RunZeroPages, sendWireRunSync } from "../src/wire_writes.ts";
import { concatBytes } from "../util/bytes.ts";
import { channelPair, type Pair } from "./helpers/pair.ts";
import { patternBytes } from "./helpers/pattern.ts";

const noPopulate = () => {};

/** The bytes a codec's packet puts on the wire: head, then its pages. */
function wireBytes(out: Outgoing): Uint8Array {
  const parts = [viewOf(out.headAddress, out.headLength).slice()];
  out.payload.addresses.forEach((address, i) => parts.push(viewOf(address, out.payload.lengths[i]).slice()));
  return concatBytes(...parts);
}

/** A region of `pages` pages of `pageSize` bytes (the last `short` bytes short) with data, except the `zero` ones. */
function sourceRegion(pageSize: number, pages: number, zero: number[], short = 0): Region {
  const region = Region.allocate(pages * pageSize - short);
  region.view().set(patternBytes(region.size, 9));
  for (const page of zero) region.view(page * pageSize, Math.min(pageSize, region.size - page * pageSize)).fill(0);
  return region;
}

/** The shared control words of a round (cursor at 0, no abort). */
const control = () => new Int32Array(new SharedArrayBuffer(4 * 4));

/** A round over all of `region`'s pages of `pageSize` bytes, `perPacket` a packet, claimed through `words`. */
function roundOf(region: Region, pageSize: number, perPacket: number, words = control()): RunRound {
  const pageCount = Math.ceil(region.size / pageSize);
  const at = { cursorAt: Control.CURSOR, abortAt: Control.ABORT };
  return { memory: region.descriptor, pageSize, pages: null, pageCount, perPacket, control: words, ...at };
}

async function withPair(body: (pair: Pair) => void): Promise<void> {
  const pair = await channelPair();
  try {
    body(pair);
  } finally {
    pair.close();
  }
}

/** Everything the server end has received, once `length` bytes arrived. */
function received(pair: Pair, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  assert.equal(pair.server.readFullSync(bytes), length);
  return bytes;
}

describe("sendWireRunSync, the module's packets", () => {
  const PAGE = 256; // small pages: many packets in few bytes
  const PER_PACKET = 4;
  const config = { channelId: 0, pageSize: PAGE, pagesPerPacket: PER_PACKET };

  /** What the codec's packet-by-packet path sends for the round's packets, with zero pages split as the channel does. */
  function expectedPackets(region: Region, pages: number[], zeroPages: boolean): Uint8Array {
    const codec = plainFormat.sender(config, region.descriptor, noPopulate);
    const scan = new PageScan(region.descriptor, PAGE);
    const parts: Uint8Array[] = [];
    for (let first = 0; first < pages.length; first += PER_PACKET) {
      const offsets = Float64Array.from(pages.slice(first, first + PER_PACKET), (page) => page * PAGE);
      const normal = new Float64Array(PER_PACKET), zero = new Float64Array(PER_PACKET);
      const zeros = zeroPages ? scan.splitZero(offsets, offsets.length, normal, zero) : 0;
      const data = zeroPages ? normal : offsets;
      parts.push(wireBytes(codec.data(data, offsets.length - zeros, zero, zeros, 0)));
    }
    return concatBytes(...parts);
  }

  for (const zeroPages of [true, false]) {
    test(`a round's packets, byte for byte the codec's (zero pages ${zeroPages ? "listed" : "not looked for"}; a page list; the short last page)`, async () => {
      const region = sourceRegion(PAGE, 20, [2, 3, 9, 19], 100);
      const pages = [0, 1, 2, 3, 5, 6, 9, 10, 11, 12, 18, 19]; // 3 packets; packet 2 ends with the short page
      const expected = expectedPackets(region, pages, zeroPages);
      await withPair((pair) => {
        const codec = plainFormat.sender(config, region.descriptor, noPopulate);
        const words = control();
        const round = {
          ...roundOf(region, PAGE, PER_PACKET, words),
          pages: Uint32Array.from(pages),
          pageCount: pages.length,
        };
        const zeroMode = zeroPages ? RunZeroPages.inPacket : RunZeroPages.notScanned;
        const run = codec.sendRun!();
        const sent = sendWireRunSync(pair.client, round, run, zeroMode, new Float64Array(16), 0, false);
        assert.equal(sent.done, true);
        assert.deepEqual(
          [sent.packets, sent.normalPages, sent.zeroPages, sent.payloadBytes],
          zeroPages ? [3, 8, 4, 8 * PAGE] : [3, 12, 0, 11 * PAGE + PAGE - 100],
        );
        assert.equal(run.packetNumber, 3, "numbered on from the codec's number");
        assert.equal(words[Control.CURSOR], 4, "three packets claimed, then the cursor ran out");
        assert.equal(pair.client.stats.bytesWritten, expected.length);
        assert.deepEqual(received(pair, expected.length), expected);
        // The codec numbers on: a control packet after the run is number 3.
        assert.equal(new DataView(wireBytes(codec.control("sync", 0)).buffer).getBigUint64(8), 3n);
      });
      await region.close();
    });
  }

  test("the cursor is shared: packets another channel claimed are not sent; the rest are", async () => {
    const region = sourceRegion(PAGE, 16, []);
    await withPair((pair) => {
      const words = control();
      words[Control.CURSOR] = 2; // packets 0 and 1 went to other channels
      const round = roundOf(region, PAGE, PER_PACKET, words);
      const run = plainFormat.sender(config, region.descriptor, noPopulate).sendRun!();
      const sent = sendWireRunSync(pair.client, round, run, RunZeroPages.inPacket, new Float64Array(4), 0, false);
      assert.deepEqual([sent.done, sent.packets, sent.normalPages], [true, 2, 8]);
      const bytes = received(pair, 2 * (32 + PER_PACKET * 8 + PER_PACKET * PAGE));
      const view = new DataView(bytes.buffer);
      assert.equal(view.getBigUint64(32), BigInt(8 * PAGE), "the first packet sent starts at page 8");
      assert.deepEqual(bytes.subarray(32 + 32, 32 + 32 + 4 * PAGE), region.view(8 * PAGE, 4 * PAGE));
    });
    await region.close();
  });

  test("an abort stops it before its next claim", async () => {
    const region = sourceRegion(PAGE, 8, []);
    await withPair((pair) => {
      const words = control();
      words[Control.ABORT] = 1;
      const round = roundOf(region, PAGE, PER_PACKET, words);
      const run = plainFormat.sender(config, region.descriptor, noPopulate).sendRun!();
      const sent = sendWireRunSync(pair.client, round, run, RunZeroPages.inPacket, new Float64Array(4), 0, false);
      assert.deepEqual([sent.done, sent.packets], [false, 0]);
      assert.equal(words[Control.CURSOR], 0, "nothing claimed");
      assert.equal(pair.client.stats.bytesWritten, 0);
    });
    await region.close();
  });

  test("a peer that reads nothing: TimeoutError after the channel's I/O timeout, what was written counted", async () => {
    const region = sourceRegion(PAGE, 64 * 1024, []); // 16 MiB: more than the socket buffers hold
    const pair = await channelPair({ ioTimeoutMs: 200 });
    try {
      const round = roundOf(region, PAGE, PER_PACKET);
      const run = plainFormat.sender(config, region.descriptor, noPopulate).sendRun!();
      assert.throws(
        () => sendWireRunSync(pair.client, round, run, RunZeroPages.inPacket, new Float64Array(4), 0, false),
        TimeoutError,
      );
      assert.ok(pair.client.stats.bytesWritten > 0, "the bytes that went out are counted");
    } finally {
      pair.close();
      await region.close();
    }
  });

  test("a rule it cannot follow, or a head too small for it: InvalidArgumentError, nothing claimed or sent", async () => {
    const region = sourceRegion(PAGE, 8, []);
    await withPair((pair) => {
      const words = control();
      const round = roundOf(region, PAGE, PER_PACKET, words);
      const run = plainFormat.sender(config, region.descriptor, noPopulate).sendRun!();
      const send = (changed: object) => () =>
        sendWireRunSync(
          pair.client,
          { ...round, ...changed },
          run,
          RunZeroPages.inPacket,
          new Float64Array(4),
          0,
          false,
        );
      assert.throws(send({ perPacket: PER_PACKET + 1 }), InvalidArgumentError, "more pages a packet than the rule's");
      assert.throws(send({ pageSize: 0 }), InvalidArgumentError, "no page size");
      assert.throws(send({ pages: Uint32Array.of(0, 1) }), InvalidArgumentError, "8 pages of a list of 2");
      assert.throws(send({ cursorAt: 4 }), InvalidArgumentError, "a control word past the array");
      const small = { ...run, head: run.head.subarray(0, 40) };
      assert.throws(
        () => sendWireRunSync(pair.client, round, small, RunZeroPages.inPacket, new Float64Array(4), 0, false),
        InvalidArgumentError,
      );
      assert.equal(words[Control.CURSOR], 0, "nothing claimed");
      assert.equal(pair.client.stats.bytesWritten, 0);
      // A page outside the memory (the callers check their lists): refused, nothing of it sent.
      const outside = { ...round, pages: Uint32Array.of(0, 1, 2, 3, 4, 5, 6, 8), pageCount: 8, perPacket: 8 };
      const wide = { ...run, rule: moduleSendRule(8), head: new Uint8Array(32 + 8 * 8) };
      assert.throws(
        () => sendWireRunSync(pair.client, outside, wide, RunZeroPages.inPacket, new Float64Array(8), 0, false),
        InvalidArgumentError,
      );
      assert.equal(pair.client.stats.bytesWritten, 0);
    });
    await region.close();
  });
});

describe("sendWireRunSync, QEMU's packets (zero pages to the caller)", () => {
  const PAGES = 40;
  const blocks = (region: Region) => ({ ramBlocks: [{ name: "pc.ram", region: region.descriptor }] });

  test("byte for byte the codec's packets; zero pages handed back, a packet of only those not sent; a full list stops it", async () => {
    const zero = [0, 1, 2, 3, 4, 5, 6, 7, 13, 39]; // packet 0 (pages 0-7) holds only zero pages
    const region = sourceRegion(QEMU_PAGE_SIZE, PAGES, zero);
    const config = { channelId: 1, pageSize: QEMU_PAGE_SIZE, pagesPerPacket: 8, qemu: blocks(region) };
    // The packet-by-packet path: data pages only, numbered from 0, packets of only zero pages skipped.
    const reference = qemuFormat.sender(config, region.descriptor, noPopulate);
    const scan = new PageScan(region.descriptor, QEMU_PAGE_SIZE);
    const parts: Uint8Array[] = [];
    for (let first = 0; first < PAGES; first += 8) {
      const offsets = Float64Array.from({ length: 8 }, (_, i) => (first + i) * QEMU_PAGE_SIZE);
      const normal = new Float64Array(8), zeros = new Float64Array(8);
      const count = 8 - scan.splitZero(offsets, 8, normal, zeros);
      if (count > 0) parts.push(wireBytes(reference.data(normal, count, zeros, 0, 0)));
    }
    const expected = concatBytes(...parts);
    await withPair((pair) => {
      const words = control();
      const round = roundOf(region, QEMU_PAGE_SIZE, 8, words);
      const run = qemuFormat.sender(config, region.descriptor, noPopulate).sendRun!();
      // Room for 9 zero offsets: after packet 0's 8, not for another packet's 8.
      const list = new Float64Array(9);
      const first = sendWireRunSync(pair.client, round, run, RunZeroPages.toCaller, list, 0, false);
      assert.deepEqual([first.done, first.packets, first.zeroPages, first.zeroCount], [false, 0, 8, 8]);
      assert.deepEqual([...list.subarray(0, 8)], zero.slice(0, 8).map((page) => page * QEMU_PAGE_SIZE));
      assert.equal(words[Control.CURSOR], 1, "stopped before claiming a packet it might not list");
      // The caller took them out: the list empty, with room for 16.
      const emptied = new Float64Array(16);
      const rest = sendWireRunSync(pair.client, round, run, RunZeroPages.toCaller, emptied, 0, false);
      assert.deepEqual([rest.done, rest.packets, rest.normalPages, rest.zeroPages], [true, 4, 30, 2]);
      assert.deepEqual([...emptied.subarray(0, rest.zeroCount)], [13 * QEMU_PAGE_SIZE, 39 * QEMU_PAGE_SIZE]);
      assert.equal(run.packetNumber, 4);
      assert.deepEqual(received(pair, expected.length), expected);
    });
    await region.close();
  });
});
