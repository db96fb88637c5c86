// The packet path without sockets: the page arithmetic (packet.ts) and the plain wire
// format behind the codec seam (plain_codec.ts): what a sending codec emits, fed through
// a byte stream into a receiving codec, lands exactly where it was read from, and nowhere
// else; a stream cut or altered on the way is a ProtocolError or a short read.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { viewOf } from "../ffi/mod.ts";
import { PAGE_SIZE, ProtocolError, Region } from "../mod.ts";
import type { Outgoing, ReadRanges } from "../src/multifd/codec.ts";
import { packetOffsets, pageRanges, PageScan, Ranges } from "../src/multifd/packet.ts";
import { plainFormat } from "../src/multifd/plain_codec.ts";
import { fillPattern } from "./helpers/multifd.ts";

const PAGE = PAGE_SIZE;

/** The bytes a sending codec's packet puts on the wire, in order. */
function wireBytes(out: Outgoing): Uint8Array {
  const parts = [viewOf(out.headAddress, out.headLength).slice()];
  out.payload.addresses.forEach((address, i) => parts.push(viewOf(address, out.payload.lengths[i]).slice()));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) bytes.set(part, at), (at += part.length);
  return bytes;
}

/** A ReadRanges over a byte stream: fills native memory, as recvmsg would; a short stream throws. */
function streamReader(stream: Uint8Array): ReadRanges & { left(): number } {
  let at = 0;
  const read = ((addresses: readonly number[], lengths: readonly number[]) => {
    addresses.forEach((address, i) => {
      if (at + lengths[i] > stream.length) throw new Error("end of stream");
      viewOf(address, lengths[i]).set(stream.subarray(at, at + lengths[i]));
      at += lengths[i];
    });
  }) as ReadRanges & { left(): number };
  read.left = () => stream.length - at;
  return read;
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

  test("PageScan splits zero pages off and zero-fills only what is not zero yet", async () => {
    const region = Region.allocate(8 * PAGE);
    region.write(2 * PAGE + 7, new Uint8Array([1]));
    region.write(5 * PAGE, new Uint8Array([1]));
    const scan = new PageScan(region.descriptor, PAGE, 8);
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
});

describe("plain codec, socket-free", () => {
  const config = { channelId: 0, pageSize: PAGE, pagesPerPacket: 4 };

  test("data, zero pages, SYNC, END and VERDICT go through and land where they belong", async () => {
    const size = 9 * PAGE + 123;
    const source = Region.allocate(size);
    fillPattern(source, 4);
    source.view(6 * PAGE, PAGE).fill(0); // a zero page
    const destination = Region.allocate(size);
    destination.view().fill(0xee); // so a page that is not written shows
    const sender = plainFormat.sender(config, source.descriptor);
    const receiver = plainFormat.receiver(config, destination.descriptor);

    // Each packet's bytes are taken at once: a codec reuses its buffers for the next one.
    const packets = [
      wireBytes(sender.data(new Float64Array([0, PAGE, 9 * PAGE]), 3, new Float64Array([6 * PAGE]), 1)),
      wireBytes(sender.control("sync", 0)),
      wireBytes(sender.data(new Float64Array([2 * PAGE, 3 * PAGE, 4 * PAGE, 5 * PAGE]), 4, new Float64Array(), 0)),
      wireBytes(sender.data(new Float64Array([7 * PAGE, 8 * PAGE]), 2, new Float64Array(), 0)),
      wireBytes(sender.control("end", 0)),
      wireBytes(sender.control("verdict", 1)),
    ];
    const read = streamReader(new Uint8Array(packets.flatMap((p) => [...p])));
    assert.deepEqual(receiver.next(read), { kind: "data", normalPages: 3, zeroPages: 1, payloadBytes: 2 * PAGE + 123 });
    assert.deepEqual(receiver.next(read), { kind: "sync", syncNumber: 0 });
    assert.equal(receiver.next(read).kind, "data");
    assert.equal(receiver.next(read).kind, "data");
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

  test("a packet altered on the way is a ProtocolError and writes nothing", async () => {
    const source = Region.allocate(4 * PAGE);
    fillPattern(source, 5);
    const destination = Region.allocate(4 * PAGE);
    const sender = plainFormat.sender(config, source.descriptor);
    const bytes = wireBytes(sender.data(new Float64Array([PAGE]), 1, new Float64Array(), 0));
    bytes[32 + 6] = 0x50; // the offset (big-endian u64 after the 32-byte header) 0x1000 becomes 0x5000: page 5 of 4
    const receiver = plainFormat.receiver(config, destination.descriptor);
    assert.throws(
      () => receiver.next(streamReader(bytes)),
      (e: Error) => e instanceof ProtocolError && /offset/.test(e.message),
    );
    assert.equal(destination.view().some((b) => b !== 0), false);
    await source.close();
    await destination.close();
  });
});
