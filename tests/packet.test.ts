// The packet path without sockets: the page arithmetic (packet.ts) and both wire formats
// behind the codec seam (plain_codec.ts, sealed_codec.ts with each cipher): what a sending
// codec emits, fed through a byte stream into a receiving codec, lands exactly where it was
// read from, and nowhere else; a stream cut or altered on the way is a ProtocolError (plain)
// or an AuthenticationError (sealed: also for a packet dropped, repeated or reordered).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { addressOf, native, viewOf } from "../ffi/mod.ts";
import { AuthenticationError, PAGE_SIZE, ProtocolError, Region } from "../mod.ts";
import type { Outgoing, PacketInput, ReadRanges } from "../src/multifd/codec.ts";
import { type Cipher, CIPHER_IDS } from "../src/multifd/aead.ts";
import { sealedFormat } from "../src/multifd/sealed_codec.ts";
import { concatBytes } from "../util/bytes.ts";
import { Buffer } from "node:buffer";
import { packetOffsets, pageRanges, PageScan, Ranges } from "../src/multifd/packet.ts";
import { plainFormat } from "../src/multifd/plain_codec.ts";
import { WireLayout, type WirePacket, type WirePagesRejection } from "../src/wire_reads.ts";
import { fillPattern } from "./helpers/multifd.ts";

const PAGE = PAGE_SIZE;
/** These tests read and write anonymous regions: nothing to fault in ahead. */
const noPopulate = () => {};

/** The bytes a sending codec's packet puts on the wire, in order. */
function wireBytes(out: Outgoing): Uint8Array {
  const parts = [viewOf(out.headAddress, out.headLength).slice()];
  out.payload.addresses.forEach((address, i) => parts.push(viewOf(address, out.payload.lengths[i]).slice()));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) bytes.set(part, at), (at += part.length);
  return bytes;
}

/**
 * A codec's input over a byte stream: fills native memory, as recvmsg would; a short stream
 * throws. Pages land where the channel's native receive puts them (pageRanges: the same
 * ranges), without a socket.
 */
function streamReader(stream: Uint8Array): PacketInput & { left(): number } {
  let position = 0;
  const read: ReadRanges = (addresses, lengths) => {
    addresses.forEach((address, i) => {
      if (position + lengths[i] > stream.length) throw new Error("end of stream");
      viewOf(address, lengths[i]).set(stream.subarray(position, position + lengths[i]));
      position += lengths[i];
    });
    return true;
  };
  /** One packet's offsets and pages, by the rules of its layout; the bytes its pages hold, or what broke them. */
  const readPacket = (packet: WirePacket): number | WirePagesRejection => {
    const { memory, pageSize, wire, at, count, normalCount, offsets, layout, payloadBytes } = packet;
    if (layout === WireLayout.module) read([addressOf(wire) + at], [8 * count]);
    const decoded = layout === WireLayout.module
      ? native.zc_offsets_decode(wire.subarray(at), count, normalCount, pageSize, memory.size, offsets)
      : native.zc_block_offsets_decode(wire, at, count, pageSize, memory.size, offsets);
    if (decoded < 0) return { reason: "bothLists", index: -1 - decoded };
    if (decoded < count) return { reason: "offset", index: decoded };
    const ranges = new Ranges();
    const holds = pageRanges(memory, pageSize, offsets, normalCount, ranges);
    if (layout === WireLayout.module && holds !== payloadBytes) return { reason: "payload", pagesHold: holds };
    read(ranges.addresses, ranges.lengths);
    return holds;
  };
  /** The next header into `wire` (0: the stream ended between packets). */
  const readAhead = (wire: Uint8Array, length: number) => {
    if (length === 0 || position === stream.length) return 0;
    read([addressOf(wire)], [length]);
    return length;
  };
  return {
    read,
    // What the channel's native packet reads do (wire_reads.ts, tested over sockets in
    // read_pages.test.ts), over the stream: the same decode, rules and run rule.
    readWirePages(packet) {
      const got = readPacket(packet);
      return typeof got === "number" ? readAhead(packet.wire, packet.aheadLength) : got;
    },
    readWireRun(packet, run) {
      const [headerLength, offsetsAt, , , normalAt, zeroAt, , maxPackets, layout, payloadAt] = run.rule;
      const { wire, memory, pageSize, offsets } = packet;
      const view = new DataView(wire.buffer, wire.byteOffset);
      Object.assign(run, { packets: 0, normalPages: 0, zeroPages: 0, payloadBytes: 0 });
      for (;;) {
        const normalCount = view.getUint32(normalAt), count = normalCount + view.getUint32(zeroAt);
        const payloadBytes = layout === WireLayout.module ? view.getUint32(payloadAt) : 0;
        const got = readPacket({
          ...packet,
          at: offsetsAt,
          count,
          normalCount,
          layout: layout as WireLayout,
          payloadBytes,
        });
        if (typeof got !== "number") return got;
        native.zc_zero_pages(
          memory.address,
          memory.size,
          pageSize,
          offsets.subarray(normalCount),
          count - normalCount,
          0,
          -1,
        );
        run.packets++, run.normalPages += normalCount, run.zeroPages += count - normalCount, run.payloadBytes += got;
        const previous = wire.slice(0, offsetsAt);
        const ahead = readAhead(wire, headerLength);
        if (ahead === 0 || run.packets === maxPackets) return ahead;
        // The rule's own test, against the previous header: its fixed bytes are the first one's.
        if (native.zc_wire_run_continues(run.rule, previous, wire) !== 1) return ahead;
      }
    },
    left: () => stream.length - position,
  };
}

describe("packet.ts", () => {
  test("Ranges merges a range that continues the last one", () => {
    const ranges = new Ranges();
    ranges.push(1000, 10);
    ranges.push(1010, 5); // continues
    ranges.push(2000, 1);
    ranges.push(1999, 1); // before, not after: kept apart
    assert.deepEqual([ranges.addresses, ranges.lengths], [[1000, 2000, 1999], [15, 1, 1]]);
    ranges.clear();
    assert.equal(ranges.count, 0);
  });

  test("offsets of a packet, and its byte ranges with the region's short last page", () => {
    const offsets = new Float64Array(4);
    packetOffsets(new Uint32Array([3, 4, 9, 10]), 0, 4, PAGE, offsets);
    assert.deepEqual([...offsets], [3 * PAGE, 4 * PAGE, 9 * PAGE, 10 * PAGE]);
    packetOffsets(null, 6, 2, PAGE, offsets);
    assert.deepEqual([...offsets.subarray(0, 2)], [6 * PAGE, 7 * PAGE]);
    const region = { address: 1 << 20, size: 10 * PAGE + 100 }; // page 10 holds 100 bytes
    const ranges = new Ranges();
    const bytes = pageRanges(region, PAGE, new Float64Array([3 * PAGE, 4 * PAGE, 9 * PAGE, 10 * PAGE]), 4, ranges);
    assert.equal(bytes, 3 * PAGE + 100);
    assert.deepEqual(ranges.addresses, [region.address + 3 * PAGE, region.address + 9 * PAGE]);
    assert.deepEqual(ranges.lengths, [2 * PAGE, PAGE + 100]);
  });

  test("byte ranges of more pages than a packet holds, none contiguous: one range each, appended", () => {
    const region = { address: 2 ** 40, size: 4000 * PAGE };
    const every = new Float64Array(Array.from({ length: 1500 }, (_, i) => 2 * i * PAGE));
    const ranges = new Ranges();
    ranges.push(region.address - PAGE, PAGE); // continued by page 0: merged with it
    assert.equal(pageRanges(region, PAGE, every, 1500, ranges), 1500 * PAGE);
    assert.equal(ranges.count, 1500);
    assert.deepEqual([ranges.addresses[0], ranges.lengths[0]], [region.address - PAGE, 2 * PAGE]);
    assert.deepEqual([ranges.addresses[1499], ranges.lengths[1499]], [region.address + 2998 * PAGE, PAGE]);
  });

  test("PageScan splits zero pages off and zero-fills only what is not zero yet", async () => {
    const region = Region.allocate(8 * PAGE);
    region.write(2 * PAGE + 7, new Uint8Array([1]));
    region.write(5 * PAGE, new Uint8Array([1]));
    const scan = new PageScan(region.descriptor, PAGE);
    const all = new Float64Array(Array.from({ length: 8 }, (_, i) => i * PAGE));
    const normal = new Float64Array(8);
    const zero = new Float64Array(8);
    assert.equal(scan.splitZero(all, 8, normal, zero), 6);
    assert.deepEqual([...normal.subarray(0, 2)], [2 * PAGE, 5 * PAGE]);
    assert.deepEqual([...zero.subarray(0, 6)], [0, 1, 3, 4, 6, 7].map((p) => p * PAGE));
    scan.zeroFill(normal, 1, 1); // page 5 only
    assert.equal(region.view(5 * PAGE, PAGE).some((b) => b !== 0), false);
    assert.equal(region.view(2 * PAGE + 7, 1)[0], 1);
    await region.close();
  });

  test("PageScan over a packet's worth of pages in any order: the same split as a byte-by-byte look", async () => {
    const pages = 512; // a default packet: the scan reads ahead of the page it looks at
    const region = Region.allocate(pages * PAGE);
    const bytes = region.view();
    const random = crypto.getRandomValues(new Uint32Array(pages));
    for (let p = 0; p < pages; p++) {
      if (random[p] % 3 === 0) bytes[p * PAGE + (random[p] >>> 4) % PAGE] = 1 + (random[p] & 0x7f); // one byte anywhere
    }
    const order = Float64Array.from({ length: pages }, (_, i) => ((i * 97) % pages) * PAGE); // not ascending
    const normal = new Float64Array(pages), zero = new Float64Array(pages);
    const zeros = new PageScan(region.descriptor, PAGE).splitZero(order, pages, normal, zero);
    const isData = (offset: number) => bytes.subarray(offset, offset + PAGE).some((b) => b !== 0);
    assert.deepEqual([...normal.subarray(0, pages - zeros)], [...order].filter(isData));
    assert.deepEqual([...zero.subarray(0, zeros)], [...order].filter((offset) => !isData(offset)));
    await region.close();
  });

  test("PageScan sees one non-zero byte anywhere in a page, a short last page too (the scan samples a few words first)", async () => {
    // Page 0 whole; page 1 the region's short last page: 2 × 256 + 13 bytes (block scan, then a tail).
    for (const size of [PAGE + 525, PAGE + 5]) {
      const region = Region.allocate(size);
      const scan = new PageScan(region.descriptor, PAGE);
      const all = new Float64Array([0, PAGE]);
      const normal = new Float64Array(2), zero = new Float64Array(2);
      const bytes = region.view();
      for (let at = 0; at < size; at++) {
        bytes[at] = 0x80;
        const zeros = scan.splitZero(all, 2, normal, zero);
        bytes[at] = 0;
        assert.equal(zeros, 1, `a byte at ${at} of ${size}`);
        assert.equal(normal[0], at < PAGE ? 0 : PAGE, `a byte at ${at} of ${size}`);
      }
      assert.equal(scan.splitZero(all, 2, normal, zero), 2);
      await region.close();
    }
  });
});

/** Both ends of a channel in `format`; for the sealed one, each end's keys as a session derives them. */
function channelPair(format: "plain" | Cipher, pagesPerPacket: number, source: Region, destination: Region) {
  const base = { channelId: 0, pageSize: PAGE, pagesPerPacket };
  if (format === "plain") {
    return {
      sender: plainFormat.sender(base, source.descriptor, noPopulate),
      receiver: plainFormat.receiver(base, destination.descriptor, noPopulate),
      staging: 0,
    };
  }
  const cipher = CIPHER_IDS[format];
  const toReceiver = new Uint8Array(32).fill(1), toSender = new Uint8Array(32).fill(2);
  const sender = sealedFormat.sender(
    { ...base, encryption: { cipher, outboundKey: toReceiver, inboundKey: toSender } },
    source.descriptor,
    noPopulate,
  );
  const receiver = sealedFormat.receiver(
    { ...base, encryption: { cipher, outboundKey: toSender, inboundKey: toReceiver } },
    destination.descriptor,
    noPopulate,
  );
  const staging = new Uint8Array(sender.stagingBytes);
  stagingBuffers.push(staging);
  return { sender, receiver, staging: addressOf(staging) }; // held: stagingBuffers
}
const stagingBuffers: Uint8Array[] = [];

for (const format of ["plain", "aegis-128l", "aes-256-gcm"] as const) {
  describe(`${format === "plain" ? "plain" : `sealed (${format})`} codec, socket-free`, () => {
    test("data, zero pages, SYNC, END and VERDICT go through and land where they belong", async () => {
      const size = 9 * PAGE + 123;
      const source = Region.allocate(size);
      fillPattern(source, 4);
      source.view(6 * PAGE, PAGE).fill(0); // a zero page
      const destination = Region.allocate(size);
      destination.view().fill(0xee); // so a page that is not written shows
      const { sender, receiver, staging } = channelPair(format, 4, source, destination);

      // Each packet's bytes are taken at once: a codec reuses its buffers for the next one.
      const none = new Float64Array();
      const packets = [
        wireBytes(sender.data(new Float64Array([0, PAGE, 9 * PAGE]), 3, new Float64Array([6 * PAGE]), 1, staging)),
        wireBytes(sender.control("sync", 0)),
        wireBytes(sender.data(new Float64Array([2 * PAGE, 3 * PAGE, 4 * PAGE, 5 * PAGE]), 4, none, 0, staging)),
        wireBytes(sender.data(new Float64Array([7 * PAGE, 8 * PAGE]), 2, none, 0, staging)),
        wireBytes(sender.control("end", 0)),
        wireBytes(sender.control("verdict", 1)),
      ];
      const stream = concatBytes(...packets);
      if (format !== "plain") {
        // Nothing of the pages shows on the wire: no 64-byte run of a page is in the stream.
        const page = source.view(2 * PAGE, PAGE);
        for (let at = 0; at + 64 <= page.length; at += 512) {
          assert.equal(Buffer.from(stream).indexOf(page.subarray(at, at + 64)), -1);
        }
      }
      const read = streamReader(stream);
      assert.deepEqual(receiver.next(read), {
        kind: "data",
        packets: 1,
        normalPages: 3,
        zeroPages: 1,
        payloadBytes: 2 * PAGE + 123,
      });
      assert.deepEqual(receiver.next(read), { kind: "sync", syncNumber: 0 });
      if (format === "plain") {
        // One run: the second DATA packet's header continues the first's (the next number).
        assert.deepEqual(receiver.next(read), {
          kind: "data",
          packets: 2,
          normalPages: 6,
          zeroPages: 0,
          payloadBytes: 6 * PAGE,
        });
      } else {
        assert.equal(receiver.next(read).kind, "data");
        assert.equal(receiver.next(read).kind, "data");
      }
      assert.deepEqual(receiver.next(read), { kind: "end" });
      assert.deepEqual(receiver.next(read), { kind: "verdict", matched: true });
      assert.equal(read.left(), 0);
      assert.ok(destination.equals(source));

      const checksum = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
      const result = receiver.result(checksum, 77);
      assert.equal(result.length, sender.resultBytes);
      assert.deepEqual(sender.parseResult(result), { checksum, bytes: 77 });
      sender.parseSyncAck(receiver.syncAck(0), 0);
      assert.throws(() => sender.parseSyncAck(receiver.syncAck(1), 0), ProtocolError);
      await source.close();
      await destination.close();
    });

    test("an offset altered on the way is refused and writes nothing", async () => {
      const source = Region.allocate(4 * PAGE);
      fillPattern(source, 5);
      const destination = Region.allocate(4 * PAGE);
      const { sender, receiver, staging } = channelPair(format, 4, source, destination);
      const bytes = wireBytes(sender.data(new Float64Array([PAGE]), 1, new Float64Array(), 0, staging));
      // Plain: the offset (big-endian u64 after the 32-byte header) 0x1000 becomes 0x5000,
      // page 5 of 4. Sealed: the same byte of the offsets record (after the 48-byte sealed header).
      const at = format === "plain" ? 32 + 6 : 48 + 6;
      bytes[at] ^= 0x40;
      const expected = format === "plain" ? ProtocolError : AuthenticationError;
      assert.throws(() => receiver.next(streamReader(bytes)), (e: Error) => e instanceof expected, expected.name);
      assert.equal(destination.view().some((b) => b !== 0), false);
      await source.close();
      await destination.close();
    });
  });
}

describe("sealed codec: what an attacker on the path can do", () => {
  /** Three data packets of one page each, sealed, as separate wire byte strings. */
  async function sealedPackets(cipher: Cipher) {
    const source = Region.allocate(4 * PAGE);
    fillPattern(source, 6);
    const destination = Region.allocate(4 * PAGE);
    const pair = channelPair(cipher, 4, source, destination);
    const none = new Float64Array();
    const packets = [0, 1, 2].map((p) =>
      wireBytes(pair.sender.data(new Float64Array([p * PAGE]), 1, none, 0, pair.staging))
    );
    await source.close();
    return { ...pair, packets, destination };
  }

  for (const cipher of ["aegis-128l", "aes-256-gcm"] as const) {
    const cases: { name: string; stream: (p: Uint8Array[]) => Uint8Array }[] = [
      { name: "a bit of page data flipped", stream: (p) => flipped(concatBytes(...p), p[0].length - 100) },
      { name: "a bit of a header flipped", stream: (p) => flipped(concatBytes(...p), 5) },
      { name: "a bit of a tag flipped", stream: (p) => flipped(concatBytes(...p), p[0].length - 1) },
      { name: "a packet dropped", stream: (p) => concatBytes(p[0], p[2]) },
      { name: "a packet repeated", stream: (p) => concatBytes(p[0], p[0], p[1]) },
      { name: "two packets swapped", stream: (p) => concatBytes(p[1], p[0], p[2]) },
    ];
    for (const c of cases) {
      test(`${cipher}: ${c.name}: AuthenticationError; only zeros where the forged record was to land`, async () => {
        const { receiver, packets, destination } = await sealedPackets(cipher);
        const read = streamReader(c.stream(packets));
        const error = (() => {
          for (;;) {
            try {
              receiver.next(read);
            } catch (e) {
              return e as Error;
            }
          }
        })();
        assert.ok(error instanceof AuthenticationError, String(error));
        // Whatever landed before is authentic (page p holds pattern bytes or is untouched);
        // nothing else was written.
        const expected = Region.allocate(4 * PAGE);
        fillPattern(expected, 6);
        for (let p = 0; p < 4; p++) {
          const page = destination.view(p * PAGE, PAGE);
          const authentic = page.every((b, i) => b === expected.view(p * PAGE, PAGE)[i]);
          assert.ok(authentic || page.every((b) => b === 0), `page ${p}`);
        }
        await expected.close();
        await destination.close();
      });
    }

    test(`${cipher}: a channel's packets under another channel's keys do not open`, async () => {
      const { packets, destination } = await sealedPackets(cipher);
      const other = Region.allocate(4 * PAGE);
      const { receiver } = channelPair(cipher, 4, other, destination);
      // The same keys would open it: the traffic keys differ per channel and session (auth.ts).
      const keys = [new Uint8Array(32).fill(3), new Uint8Array(32).fill(4)];
      const stranger = sealedFormat.receiver(
        {
          channelId: 0,
          pageSize: PAGE,
          pagesPerPacket: 4,
          encryption: { cipher: CIPHER_IDS[cipher], outboundKey: keys[0], inboundKey: keys[1] },
        },
        destination.descriptor,
        noPopulate,
      );
      assert.throws(() => stranger.next(streamReader(packets[0])), AuthenticationError);
      assert.equal(receiver.next(streamReader(packets[0])).kind, "data");
      await other.close();
      await destination.close();
    });
  }
});

function flipped(bytes: Uint8Array, at: number): Uint8Array {
  bytes[at] ^= 0x01;
  return bytes;
}
