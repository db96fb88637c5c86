// The multifd wire format (docs/PROTOCOL.md) and channel authentication, without sockets:
// encoders and parsers round-trip, every validation rule rejects with the right field,
// the version 2 handshake MACs (HKDF-derived key, both nonces, both directions).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac, hkdfSync } from "node:crypto";
import { InvalidArgumentError, ZeroCopyMultifdError } from "../src/errors.ts";
import {
  importSecret,
  KEY_SALT,
  MIN_SECRET_BYTES,
  newNonce,
  sessionKeys,
  signInit,
  signInitAck,
  signResult,
  signVerdict,
  type Transcript,
  verifyInit,
  verifyInitAck,
  verifyResult,
  verifyVerdict,
} from "../src/multifd/auth.ts";
import {
  DEFAULT_PAGES_PER_PACKET,
  encodeHello,
  encodeInitFields,
  encodeOffsets,
  encodePacketHeader,
  encodeReply,
  HELLO_BYTES,
  HELLO_MAGIC,
  HelloFlag,
  type Init,
  INIT_ACK_BYTES,
  INIT_BYTES,
  INIT_FIELDS_BYTES,
  INIT_MAGIC,
  MAC_BYTES,
  MAX_CHANNELS,
  MAX_PAGES_PER_PACKET,
  MAX_REGION_BYTES,
  NONCE_BYTES,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  PACKET_MAGIC,
  type PacketHeader,
  type PacketLimits,
  PacketType,
  PAGE_SIZE,
  parseHello,
  parseInitFields,
  parseOffsets,
  parsePacketHeader,
  parseReply,
  PROTOCOL_VERSION,
  ProtocolError,
  RefusalCode,
  refusalText,
  REPLY_BYTES,
  REPLY_MAGIC,
  ReplyType,
  SESSION_ID_BYTES,
  TransferRefusedError,
  writeOffset,
} from "../src/multifd/wire.ts";

const PAGE = PAGE_SIZE;
const TWO_53 = 2 ** 53;

/** Asserts that `fn` throws a ProtocolError about `field`. */
function rejects(fn: () => unknown, field: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
    assert.ok(error instanceof ZeroCopyMultifdError);
    assert.equal(error.field, field, `wrong field in: ${error.message}`);
    assert.ok(error.message.includes(`(${field})`));
    return true;
  });
}

function ascii(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

function setU64(bytes: Uint8Array, at: number, value: bigint): void {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(at, value);
}

// --- handshake ---

describe("HELLO", () => {
  const nonce = Uint8Array.from({ length: NONCE_BYTES }, (_, i) => i + 1);

  test("layout and round trip", () => {
    const hello = encodeHello(nonce);
    assert.equal(hello.length, HELLO_BYTES);
    assert.equal(HELLO_BYTES, 48);
    assert.equal(ascii(hello.subarray(0, 4)), "ZCMH");
    assert.equal(new DataView(hello.buffer).getUint32(0), HELLO_MAGIC);
    assert.equal(new DataView(hello.buffer).getUint16(4), PROTOCOL_VERSION);
    assert.deepEqual(hello.subarray(6, 8), new Uint8Array(2));
    assert.deepEqual(hello.subarray(8, 40), nonce);
    assert.deepEqual(hello.subarray(40, 48), new Uint8Array(8));
    const parsed = parseHello(hello);
    assert.deepEqual(parsed, { nonce, flags: 0 });
    hello[8] ^= 0xff;
    assert.equal(parsed.nonce[0], 1, "the nonce returned is a copy");
    // Flags (bytes 6-7): what this receiver can do, big-endian like every field.
    const flagged = encodeHello(nonce, HelloFlag.FAST_AEGIS_CHECKSUM);
    assert.deepEqual(flagged.subarray(6, 8), Uint8Array.of(0, 1));
    assert.deepEqual(parseHello(flagged), { nonce, flags: HelloFlag.FAST_AEGIS_CHECKSUM });
  });

  test("a view into a larger buffer parses", () => {
    const buffer = new Uint8Array(HELLO_BYTES + 10);
    buffer.set(encodeHello(nonce), 5);
    assert.deepEqual(parseHello(buffer.subarray(5)).nonce, nonce);
  });

  test("flags a receiver does not know, and bytes 40-47, are not checked (a newer receiver may set them)", () => {
    const hello = encodeHello(nonce);
    hello[6] = 0xff;
    hello[47] = 0xff;
    assert.deepEqual(parseHello(hello), { nonce, flags: 0xff00 });
  });

  test("rejections", () => {
    rejects(() => parseHello(encodeHello(nonce).subarray(0, HELLO_BYTES - 1)), "hello.length");
    const magic = encodeHello(nonce);
    magic[3] ^= 1;
    rejects(() => parseHello(magic), "hello.magic");
    rejects(() => parseHello(encodeInitFields(validInit()).subarray(0, HELLO_BYTES)), "hello.magic");
    for (const older of [0, 1, 3]) {
      const version = encodeHello(nonce);
      version[5] = older;
      rejects(() => parseHello(version), "hello.version");
    }
    // A version 1 receiver (an older zerocopy-multifd) is named as such.
    const v1 = encodeHello(nonce);
    v1[5] = 1;
    assert.throws(() => parseHello(v1), /receiver speaks protocol version 1, an older zerocopy-multifd: upgrade it/);
  });
});

function validInit(overrides: Partial<Init> = {}): Init {
  return {
    sessionId: Uint8Array.from({ length: SESSION_ID_BYTES }, (_, i) => 0xa0 + i),
    channelId: 2,
    channelCount: 4,
    pageSize: PAGE,
    regionSize: 5 * 2 ** 32 + 123,
    pagesPerPacket: DEFAULT_PAGES_PER_PACKET,
    cipher: 0,
    checksum: 0,
    ...overrides,
  };
}

describe("INIT", () => {
  test("layout and round trip", () => {
    const init = validInit();
    const bytes = encodeInitFields(init);
    assert.equal(bytes.length, INIT_FIELDS_BYTES);
    assert.equal(INIT_BYTES, 128);
    assert.equal(ascii(bytes.subarray(0, 4)), "ZCMI");
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint32(0), INIT_MAGIC);
    assert.equal(view.getUint16(4), PROTOCOL_VERSION);
    assert.equal(view.getUint16(6), 0);
    assert.equal(new DataView(encodeInitFields(validInit({ cipher: 2 })).buffer).getUint16(6), 2);
    assert.deepEqual(bytes.subarray(8, 24), init.sessionId);
    assert.equal(view.getUint16(24), 2);
    assert.equal(view.getUint16(26), 4);
    assert.equal(view.getUint32(28), PAGE);
    assert.equal(view.getBigUint64(32), 5n * 2n ** 32n + 123n);
    assert.equal(view.getUint32(40), DEFAULT_PAGES_PER_PACKET);
    assert.equal(view.getUint16(44), 0);
    assert.equal(new DataView(encodeInitFields(validInit({ checksum: 1 })).buffer).getUint16(44), 1);
    assert.deepEqual(bytes.subarray(46), new Uint8Array(18));
    assert.deepEqual(parseInitFields(bytes), init);
  });

  test("boundary values are accepted", () => {
    for (
      const init of [
        validInit({ channelId: 0, channelCount: 1 }),
        validInit({ channelId: MAX_CHANNELS - 1, channelCount: MAX_CHANNELS }),
        validInit({ pagesPerPacket: 1 }),
        validInit({ pagesPerPacket: MAX_PAGES_PER_PACKET }),
        validInit({ regionSize: 0 }),
        validInit({ regionSize: 1 }),
        validInit({ regionSize: MAX_REGION_BYTES }),
        validInit({ cipher: 1 }),
        validInit({ cipher: 2 }),
        validInit({ checksum: 1 }),
      ]
    ) {
      assert.deepEqual(parseInitFields(encodeInitFields(init)), init);
    }
  });

  test("rejections", () => {
    const mutated = (mutate: (bytes: Uint8Array, view: DataView) => void) => {
      const bytes = encodeInitFields(validInit());
      mutate(bytes, new DataView(bytes.buffer));
      return () => parseInitFields(bytes);
    };
    rejects(() => parseInitFields(encodeInitFields(validInit()).subarray(0, 63)), "init.length");
    rejects(mutated((_, v) => v.setUint32(0, HELLO_MAGIC)), "init.magic");
    rejects(mutated((_, v) => v.setUint16(4, 0)), "init.version");
    rejects(mutated((_, v) => v.setUint16(4, 1)), "init.version");
    rejects(mutated((_, v) => v.setUint16(4, 3)), "init.version");
    rejects(mutated((_, v) => v.setUint16(6, 3)), "init.cipher");
    rejects(mutated((_, v) => v.setUint16(6, 0x8000)), "init.cipher");
    rejects(mutated((_, v) => v.setUint16(44, 2)), "init.checksum");
    rejects(mutated((_, v) => v.setUint16(44, 0x100)), "init.checksum");
    for (let at = 46; at < INIT_FIELDS_BYTES; at++) rejects(mutated((b) => (b[at] = 1)), "init.reserved");
    rejects(() => parseInitFields(encodeInitFields(validInit({ channelCount: 0, channelId: 0 }))), "init.channelCount");
    rejects(
      () => parseInitFields(encodeInitFields(validInit({ channelCount: MAX_CHANNELS + 1, channelId: 0 }))),
      "init.channelCount",
    );
    rejects(() => parseInitFields(encodeInitFields(validInit({ channelId: 4, channelCount: 4 }))), "init.channelId");
    rejects(() => parseInitFields(encodeInitFields(validInit({ channelId: 0xffff }))), "init.channelId");
    for (const pageSize of [0, PAGE - 1, PAGE + 1, 2 * PAGE, 65536]) {
      rejects(() => parseInitFields(encodeInitFields(validInit({ pageSize }))), "init.pageSize");
    }
    for (const pagesPerPacket of [0, MAX_PAGES_PER_PACKET + 1, 0xffffffff]) {
      rejects(() => parseInitFields(encodeInitFields(validInit({ pagesPerPacket }))), "init.pagesPerPacket");
    }
    // Above 4 TiB page indices and the senders' packet cursor could overflow: refused.
    rejects(
      () => parseInitFields(encodeInitFields(validInit({ regionSize: MAX_REGION_BYTES + 1 }))),
      "init.regionSize",
    );
    rejects(mutated((b) => setU64(b, 32, 2n ** 53n)), "init.regionSize");
    rejects(mutated((b) => setU64(b, 32, 2n ** 64n - 1n)), "init.regionSize");
  });
});

// --- data path ---

const limits = (over: Partial<PacketLimits> = {}): PacketLimits => ({
  expectedPacketNumber: 7,
  pagesPerPacket: 8,
  pageSize: PAGE,
  ...over,
});

function header(over: Partial<PacketHeader> = {}): PacketHeader {
  return {
    type: PacketType.DATA,
    packetNumber: 7,
    normalPages: 2,
    zeroPages: 1,
    payloadBytes: 2 * PAGE,
    argument: 0,
    ...over,
  };
}

function encodeHeader(h: PacketHeader): DataView {
  const view = new DataView(new ArrayBuffer(PACKET_HEADER_BYTES));
  encodePacketHeader(view, h);
  return view;
}

describe("packet header", () => {
  test("layout and round trip of every type", () => {
    const cases: PacketHeader[] = [
      header(),
      header({ normalPages: 0, zeroPages: 8, payloadBytes: 0 }),
      header({ normalPages: 8, zeroPages: 0, payloadBytes: 8 * PAGE }),
      header({ normalPages: 1, zeroPages: 0, payloadBytes: 1 }),
      header({ type: PacketType.SYNC, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 0 }),
      header({ type: PacketType.SYNC, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 0xffffffff }),
      header({ type: PacketType.END, normalPages: 0, zeroPages: 0, payloadBytes: 0 }),
      header({ type: PacketType.VERDICT, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 0 }),
      header({ type: PacketType.VERDICT, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 1 }),
    ];
    for (const h of cases) assert.deepEqual(parsePacketHeader(encodeHeader(h), limits()), h);

    const view = encodeHeader(header({ packetNumber: TWO_53 - 1, argument: 0 }));
    const bytes = new Uint8Array(view.buffer);
    assert.equal(ascii(bytes.subarray(0, 4)), "ZCMP");
    assert.equal(view.getUint32(0), PACKET_MAGIC);
    assert.equal(view.getUint8(4), PacketType.DATA);
    assert.equal(view.getUint8(5), 0);
    assert.equal(view.getUint16(6), 0);
    assert.equal(view.getBigUint64(8), 2n ** 53n - 1n);
    assert.equal(view.getUint32(16), 2);
    assert.equal(view.getUint32(20), 1);
    assert.equal(view.getUint32(24), 2 * PAGE);
    assert.equal(view.getUint32(28), 0);
    assert.equal(parsePacketHeader(view, limits({ expectedPacketNumber: TWO_53 - 1 })).packetNumber, TWO_53 - 1);
  });

  test("the header may be followed by more bytes", () => {
    const view = new DataView(new ArrayBuffer(PACKET_HEADER_BYTES + 16));
    encodePacketHeader(view, header());
    assert.deepEqual(parsePacketHeader(view, limits()), header());
  });

  test("rejections", () => {
    const bad = (mutate: (view: DataView) => void, over: Partial<PacketLimits> = {}) => {
      const view = encodeHeader(header());
      mutate(view);
      return () => parsePacketHeader(view, limits(over));
    };
    rejects(() => parsePacketHeader(new DataView(new ArrayBuffer(31)), limits()), "packet.length");
    rejects(bad((v) => v.setUint32(0, REPLY_MAGIC)), "packet.magic");
    rejects(bad((v) => v.setUint32(0, 0)), "packet.magic");
    for (const type of [0, 5, 255]) rejects(bad((v) => v.setUint8(4, type)), "packet.type");
    rejects(bad((v) => v.setUint8(5, 1)), "packet.flags");
    rejects(bad((v) => v.setUint8(5, 0x80)), "packet.flags");
    rejects(bad((v) => v.setUint16(6, 1)), "packet.reserved");
    rejects(bad((v) => v.setUint8(6, 0x80)), "packet.reserved");
    // packet number: exactly the expected one; a u64 >= 2^53 is refused too
    rejects(bad(() => {}, { expectedPacketNumber: 6 }), "packet.number");
    rejects(bad(() => {}, { expectedPacketNumber: 8 }), "packet.number");
    rejects(bad(() => {}, { expectedPacketNumber: 0 }), "packet.number");
    rejects(bad((v) => v.setBigUint64(8, 2n ** 53n)), "packet.number");
    rejects(bad((v) => v.setBigUint64(8, 2n ** 64n - 1n)), "packet.number");
    rejects(bad((v) => v.setBigUint64(8, 2n ** 32n + 7n)), "packet.number");
    // DATA page count: 1..pagesPerPacket
    rejects(bad((v) => (v.setUint32(16, 0), v.setUint32(20, 0), v.setUint32(24, 0))), "packet.pages");
    rejects(bad((v) => (v.setUint32(16, 8), v.setUint32(20, 1))), "packet.pages");
    rejects(bad((v) => (v.setUint32(16, 0), v.setUint32(20, 9), v.setUint32(24, 0))), "packet.pages");
    rejects(bad((v) => (v.setUint32(16, 0xffffffff), v.setUint32(20, 1))), "packet.pages");
    rejects(bad((v) => (v.setUint32(16, 0x80000000), v.setUint32(20, 0x80000000))), "packet.pages");
    rejects(bad((v) => v.setUint32(20, 7), { pagesPerPacket: 8 }), "packet.pages");
    rejects(bad(() => {}, { pagesPerPacket: 2 }), "packet.pages");
    // payload: at most normalPages full pages (exact sum checked with the offsets)
    rejects(bad((v) => v.setUint32(24, 2 * PAGE + 1)), "packet.payloadBytes");
    rejects(bad((v) => (v.setUint32(16, 0), v.setUint32(24, 1))), "packet.payloadBytes");
    rejects(bad((v) => v.setUint32(28, 1)), "packet.argument");
    // control packets carry no pages and no payload
    for (const type of [PacketType.SYNC, PacketType.END, PacketType.VERDICT]) {
      const control = (mutate: (v: DataView) => void) => () => {
        const view = encodeHeader(header({ type, normalPages: 0, zeroPages: 0, payloadBytes: 0 }));
        mutate(view);
        return parsePacketHeader(view, limits());
      };
      assert.equal(control(() => {})().type, type);
      rejects(control((v) => v.setUint32(16, 1)), "packet.pages");
      rejects(control((v) => v.setUint32(20, 1)), "packet.pages");
      rejects(control((v) => v.setUint32(24, 1)), "packet.pages");
    }
    const end = encodeHeader(
      header({ type: PacketType.END, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument: 1 }),
    );
    rejects(() => parsePacketHeader(end, limits()), "packet.argument");
    for (const argument of [2, 0xffffffff]) {
      const verdict = encodeHeader(
        header({ type: PacketType.VERDICT, normalPages: 0, zeroPages: 0, payloadBytes: 0, argument }),
      );
      rejects(() => parsePacketHeader(verdict, limits()), "packet.argument");
    }
  });
});

/** A DATA packet's header and offset list, as the receiver sees them. */
function dataPacket(normal: number[], zero: number[], payloadBytes: number) {
  const h = header({ normalPages: normal.length, zeroPages: zero.length, payloadBytes });
  const view = new DataView(new ArrayBuffer((normal.length + zero.length) * OFFSET_BYTES));
  [...normal, ...zero].forEach((offset, i) => writeOffset(view, i * OFFSET_BYTES, offset));
  return { header: h, view };
}

function offsets(normal: number[], zero: number[], payloadBytes: number, regionSize: number): number[] {
  const { header: h, view } = dataPacket(normal, zero, payloadBytes);
  const out = new Float64Array(MAX_PAGES_PER_PACKET).fill(NaN);
  parseOffsets(view, h, regionSize, PAGE, out);
  return Array.from(out.subarray(0, normal.length + zero.length));
}

describe("offset list", () => {
  const region = 16 * PAGE;

  test("normal pages first, then zero pages; each list sorted, the two lists interleaved", () => {
    assert.deepEqual(offsets([0, PAGE, 5 * PAGE], [2 * PAGE], 3 * PAGE, region), [0, PAGE, 5 * PAGE, 2 * PAGE]);
    assert.deepEqual(offsets([15 * PAGE], [0, 14 * PAGE], PAGE, region), [15 * PAGE, 0, 14 * PAGE]);
    assert.deepEqual(offsets([], [0, 3 * PAGE, 15 * PAGE], 0, region), [0, 3 * PAGE, 15 * PAGE]);
    assert.deepEqual(offsets([3 * PAGE], [], PAGE, region), [3 * PAGE]);
  });

  test("the last page of a region that is not a page multiple is short", () => {
    const size = 3 * PAGE + 100;
    assert.deepEqual(offsets([0, 3 * PAGE], [], PAGE + 100, size), [0, 3 * PAGE]);
    assert.deepEqual(offsets([3 * PAGE], [], 100, size), [3 * PAGE]);
    assert.deepEqual(offsets([], [3 * PAGE], 0, size), [3 * PAGE]);
    assert.deepEqual(offsets([0], [], 1, 1), [0]);
    assert.deepEqual(offsets([0], [], PAGE - 1, PAGE - 1), [0]);
    rejects(() => offsets([3 * PAGE], [], PAGE, size), "packet.payloadBytes");
    rejects(() => offsets([0, 3 * PAGE], [], 2 * PAGE, size), "packet.payloadBytes");
    rejects(() => offsets([3 * PAGE], [], 99, size), "packet.payloadBytes");
    rejects(() => offsets([3 * PAGE], [], 101, size), "packet.payloadBytes");
  });

  test("offsets up to 2^53 - page size", () => {
    const size = TWO_53 - 1;
    const last = TWO_53 - PAGE;
    assert.deepEqual(offsets([last - PAGE, last], [0], 2 * PAGE - 1, size), [last - PAGE, last, 0]);
    assert.deepEqual(offsets([2 ** 32, 2 ** 32 + PAGE], [], 2 * PAGE, size), [2 ** 32, 2 ** 32 + PAGE]);
    const { header: h, view } = dataPacket([0], [], PAGE);
    view.setBigUint64(0, 2n ** 53n);
    rejects(() => parseOffsets(view, h, size, PAGE, new Float64Array(8)), "packet.offset");
    view.setBigUint64(0, 2n ** 64n - BigInt(PAGE));
    rejects(() => parseOffsets(view, h, size, PAGE, new Float64Array(8)), "packet.offset");
  });

  test("rejections", () => {
    // truncated list
    const { header: h, view } = dataPacket([0, PAGE], [2 * PAGE], 2 * PAGE);
    const short = new DataView(view.buffer, 0, 3 * OFFSET_BYTES - 1);
    rejects(() => parseOffsets(short, h, region, PAGE, new Float64Array(8)), "packet.offsets");
    // not page-aligned
    rejects(() => offsets([1], [], PAGE, region), "packet.offset");
    rejects(() => offsets([PAGE + 1], [], PAGE, region), "packet.offset");
    rejects(() => offsets([PAGE - 1], [], PAGE, region), "packet.offset");
    rejects(() => offsets([0], [PAGE / 2], PAGE, region), "packet.offset");
    // outside the region
    rejects(() => offsets([region], [], PAGE, region), "packet.offset");
    rejects(() => offsets([0], [region], PAGE, region), "packet.offset");
    rejects(() => offsets([2 * region], [], PAGE, region), "packet.offset");
    rejects(() => offsets([0], [], PAGE, 0), "packet.offset");
    rejects(() => offsets([4 * PAGE], [], 100, 3 * PAGE + 100), "packet.offset");
    // out of order or repeated within a list
    rejects(() => offsets([PAGE, 0], [], 2 * PAGE, region), "packet.offset");
    rejects(() => offsets([0, PAGE, PAGE], [], 3 * PAGE, region), "packet.offset");
    rejects(() => offsets([0, 0], [], 2 * PAGE, region), "packet.offset");
    rejects(() => offsets([], [2 * PAGE, PAGE], 0, region), "packet.offset");
    rejects(() => offsets([], [PAGE, PAGE], 0, region), "packet.offset");
    rejects(() => offsets([0], [3 * PAGE, 5 * PAGE, 4 * PAGE], PAGE, region), "packet.offset");
    // an offset both normal and zero, wherever the two lists meet
    rejects(() => offsets([0], [0], PAGE, region), "packet.offset");
    rejects(() => offsets([PAGE, 5 * PAGE], [0, 2 * PAGE, 5 * PAGE], 2 * PAGE, region), "packet.offset");
    rejects(() => offsets([15 * PAGE], [0, 15 * PAGE], PAGE, region), "packet.offset");
    rejects(() => offsets([0, 9 * PAGE], [PAGE, 2 * PAGE, 9 * PAGE], 2 * PAGE, region), "packet.offset");
    // payload not what the normal pages hold
    rejects(() => offsets([0, PAGE], [], 2 * PAGE - 1, region), "packet.payloadBytes");
    rejects(() => offsets([0, PAGE], [], PAGE, region), "packet.payloadBytes");
  });

  test("encodeOffsets writes a list as big-endian u64s where told, and refuses to overrun", () => {
    const values = [0, PAGE, 2 ** 32 + PAGE, TWO_53 - PAGE];
    const wire = new Uint8Array(8 + values.length * OFFSET_BYTES);
    assert.equal(encodeOffsets(wire, 8, new Float64Array(values), values.length), wire.length);
    const view = new DataView(wire.buffer);
    assert.deepEqual(values.map((_, i) => view.getBigUint64(8 + i * OFFSET_BYTES)), values.map(BigInt));
    assert.deepEqual([...wire.subarray(0, 8)], new Array(8).fill(0));
    assert.throws(() => encodeOffsets(wire, 16, new Float64Array(values), values.length), RangeError);
    assert.throws(() => encodeOffsets(wire, 0, new Float64Array(2), 3), RangeError);
  });

  test("writeOffset writes a big-endian u64", () => {
    const view = new DataView(new ArrayBuffer(8));
    for (const value of [0, PAGE, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + PAGE, TWO_53 - PAGE, TWO_53 - 1]) {
      writeOffset(view, 0, value);
      assert.equal(view.getBigUint64(0), BigInt(value));
    }
  });
});

describe("reply", () => {
  test("layout and round trip", () => {
    const checksum = 0xfedc_ba98_7654_3210n;
    const bytes = encodeReply({ type: ReplyType.RESULT, value: checksum, bytes: TWO_53 - 1, status: 0 });
    assert.equal(bytes.length, REPLY_BYTES);
    assert.equal(ascii(bytes.subarray(0, 4)), "ZCMR");
    const view = new DataView(bytes.buffer);
    assert.equal(view.getUint32(0), REPLY_MAGIC);
    assert.equal(view.getUint8(4), ReplyType.RESULT);
    assert.deepEqual(bytes.subarray(5, 8), new Uint8Array(3));
    assert.equal(view.getBigUint64(8), checksum);
    assert.equal(view.getBigUint64(16), 2n ** 53n - 1n);
    assert.equal(view.getUint32(24), 0);
    assert.deepEqual(bytes.subarray(28), new Uint8Array(4));
    assert.deepEqual(parseReply(bytes, ReplyType.RESULT), {
      type: ReplyType.RESULT,
      value: checksum,
      bytes: TWO_53 - 1,
      status: 0,
    });
    const max = encodeReply({ type: ReplyType.RESULT, value: 2n ** 64n - 1n, bytes: 0, status: 0 });
    assert.equal(parseReply(max, ReplyType.RESULT).value, 2n ** 64n - 1n);
    const ack = encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });
    assert.equal(parseReply(ack, ReplyType.INIT_ACK).type, ReplyType.INIT_ACK);
    const sync = encodeReply({ type: ReplyType.SYNC_ACK, value: 41n, bytes: 0, status: 0 });
    assert.equal(parseReply(sync, ReplyType.SYNC_ACK).value, 41n);
  });

  test("rejections", () => {
    const ack = encodeReply({ type: ReplyType.SYNC_ACK, value: 3n, bytes: 0, status: 0 });
    rejects(() => parseReply(ack, ReplyType.INIT_ACK), "reply.type");
    rejects(() => parseReply(ack, ReplyType.RESULT), "reply.type");
    rejects(() => parseReply(ack.subarray(0, REPLY_BYTES - 1), ReplyType.SYNC_ACK), "reply.length");
    const magic = ack.slice();
    magic[0] = 0;
    rejects(() => parseReply(magic, ReplyType.SYNC_ACK), "reply.magic");
    const big = ack.slice();
    setU64(big, 16, 2n ** 53n);
    rejects(() => parseReply(big, ReplyType.SYNC_ACK), "reply.bytes");
    const unknown = ack.slice();
    unknown[4] = 9;
    rejects(() => parseReply(unknown, ReplyType.SYNC_ACK), "reply.type");
  });

  test("an ERROR reply throws TransferRefusedError with its code, whatever was expected", () => {
    for (const code of [...Object.values(RefusalCode), 0, 99]) {
      const error = encodeReply({ type: ReplyType.ERROR, value: 0n, bytes: 0, status: code });
      for (const expected of [ReplyType.INIT_ACK, ReplyType.SYNC_ACK, ReplyType.RESULT]) {
        assert.throws(() => parseReply(error, expected), (e: unknown) => {
          assert.ok(e instanceof TransferRefusedError);
          assert.ok(e instanceof ZeroCopyMultifdError);
          assert.equal(e.code, code);
          assert.equal(e.message, `receiver refused: ${refusalText(code)}`);
          return true;
        });
      }
    }
  });

  test("refusal codes and their text", () => {
    assert.deepEqual(RefusalCode, {
      SESSION_MISMATCH: 1,
      BAD_CHANNEL_ID: 2,
      DUPLICATE_CHANNEL: 3,
      REGION_TOO_LARGE: 4,
      BAD_PARAMETERS: 5,
      DESTINATION_FAILED: 6,
      ABORTED: 7,
      ENCRYPTION_REQUIRED: 8,
    });
    for (const code of Object.values(RefusalCode)) assert.doesNotMatch(refusalText(code), /unknown/);
    assert.equal(refusalText(0), "unknown refusal code 0");
    assert.equal(refusalText(9), "unknown refusal code 9");
  });
});

describe("constants (docs/PROTOCOL.md)", () => {
  test("sizes, types and limits", () => {
    assert.deepEqual(
      [PROTOCOL_VERSION, PAGE_SIZE, DEFAULT_PAGES_PER_PACKET, MAX_PAGES_PER_PACKET, MAX_CHANNELS],
      [2, 4096, 1024, 1024, 64],
    );
    assert.deepEqual(
      [NONCE_BYTES, SESSION_ID_BYTES, MAC_BYTES, HELLO_BYTES, INIT_FIELDS_BYTES, INIT_BYTES, INIT_ACK_BYTES],
      [32, 16, 32, 48, 64, 128, 64],
    );
    assert.deepEqual([PACKET_HEADER_BYTES, OFFSET_BYTES, REPLY_BYTES], [32, 8, 32]);
    assert.deepEqual(PacketType, { DATA: 1, SYNC: 2, END: 3, VERDICT: 4 });
    assert.deepEqual(ReplyType, { INIT_ACK: 1, SYNC_ACK: 2, RESULT: 3, ERROR: 4 });
  });
});

// --- authentication ---

describe("auth", () => {
  const secret = "correct horse battery staple";
  const fields = () => encodeInitFields(validInit());

  const transcript = (): Transcript => ({ receiverNonce: newNonce(), senderNonce: newNonce(), init: fields() });
  const ack = () => encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });

  test("known answers: HKDF-SHA-256 handshake key, HMAC over label ‖ both nonces ‖ INIT (‖ INIT_ACK)", async () => {
    // An independent implementation (node:crypto) of docs/PROTOCOL.md "Keys and MACs".
    const handshakeKey = Buffer.from(hkdfSync("sha256", secret, KEY_SALT, "handshake", 32));
    const keys = await importSecret(secret);
    const t = transcript();
    const initMac = await signInit(keys, t);
    assert.equal(initMac.length, MAC_BYTES);
    const expectedInit = createHmac("sha256", handshakeKey).update("zerocopy-multifd v2 INIT, sender to receiver")
      .update(t.receiverNonce).update(t.senderNonce).update(t.init).digest();
    assert.deepEqual(initMac, new Uint8Array(expectedInit));
    const ackMac = await signInitAck(keys, t, ack());
    const expectedAck = createHmac("sha256", handshakeKey)
      .update("zerocopy-multifd v2 INIT_ACK, receiver to sender")
      .update(t.receiverNonce).update(t.senderNonce).update(t.init).update(ack()).digest();
    assert.deepEqual(ackMac, new Uint8Array(expectedAck));
    assert.equal(await verifyInit(keys, t, initMac), true);
    assert.equal(await verifyInitAck(keys, t, ack(), ackMac), true);
    // The secret itself is never the MAC key.
    const underSecret = createHmac("sha256", secret).update(t.receiverNonce).update(t.init).digest();
    assert.notDeepEqual(initMac, new Uint8Array(underSecret));
    // a string secret is its UTF-8 bytes
    const bytesKeys = await importSecret(new TextEncoder().encode(secret));
    assert.equal(await verifyInit(bytesKeys, t, initMac), true);
  });

  test("known answers: the session's checksum key and the RESULT and VERDICT MACs", async () => {
    const keys = await importSecret(secret);
    const t = transcript();
    const session = await sessionKeys(keys, t);
    const info = (label: string) => Buffer.concat([Buffer.from(label), t.receiverNonce, t.senderNonce, t.init]);
    assert.deepEqual(
      session.checksum,
      new Uint8Array(hkdfSync("sha256", secret, KEY_SALT, info("region checksum"), 32)),
    );
    const endKey = Buffer.from(hkdfSync("sha256", secret, KEY_SALT, info("end of stream"), 32));
    const checksum = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
    const end = (label: string, channel: number, bytes: number, extra: number) => {
      const fields = Buffer.alloc(11);
      fields.writeUInt16BE(channel, 0);
      fields.writeBigUInt64BE(BigInt(bytes), 2);
      return new Uint8Array(
        createHmac("sha256", endKey).update(label).update(fields.subarray(0, 10)).update(checksum)
          .update(Uint8Array.of(extra)).digest(),
      );
    };
    const resultMac = await signResult(session, 3, 123456789, checksum);
    assert.deepEqual(resultMac, end("zerocopy-multifd v2 RESULT, receiver to sender", 3, 123456789, 0));
    assert.equal(await verifyResult(session, 3, 123456789, checksum, resultMac), true);
    assert.equal(await verifyResult(session, 2, 123456789, checksum, resultMac), false, "another channel");
    assert.equal(await verifyResult(session, 3, 123456788, checksum, resultMac), false, "another byte count");
    const verdictMac = await signVerdict(session, true, 99, checksum);
    assert.deepEqual(verdictMac, end("zerocopy-multifd v2 VERDICT, sender to receiver", 0, 99, 1));
    assert.equal(await verifyVerdict(session, true, 99, checksum, verdictMac), true);
    assert.equal(await verifyVerdict(session, false, 99, checksum, verdictMac), false, "the verdict flipped");
    const other = await sessionKeys(keys, { ...t, senderNonce: newNonce() });
    assert.equal(await verifyVerdict(other, true, 99, checksum, verdictMac), false, "another session");
    assert.notDeepEqual(other.checksum, session.checksum);
  });

  test("rejects a wrong secret, another nonce on either side, a modified field, a reflected or forged MAC", async () => {
    const keys = await importSecret(secret);
    const t = transcript();
    const mac = await signInit(keys, t);
    const ackMac = await signInitAck(keys, t, ack());
    assert.equal(await verifyInit(await importSecret(secret + "!"), t, mac), false);
    assert.equal(await verifyInitAck(await importSecret(secret.toUpperCase()), t, ack(), ackMac), false);
    assert.equal(await verifyInit(keys, { ...t, receiverNonce: newNonce() }, mac), false, "another HELLO nonce");
    assert.equal(await verifyInitAck(keys, { ...t, senderNonce: newNonce() }, ack(), ackMac), false, "replayed ack");
    assert.equal(
      await verifyInit(keys, { ...t, receiverNonce: t.senderNonce, senderNonce: t.receiverNonce }, mac),
      false,
    );
    for (let at = 0; at < INIT_FIELDS_BYTES; at++) {
      const modified = fields();
      modified[at] ^= 1 << (at % 8);
      assert.equal(await verifyInit(keys, { ...t, init: modified }, mac), false, `field byte ${at} modified`);
      assert.equal(await verifyInitAck(keys, { ...t, init: modified }, ack(), ackMac), false, `ack: byte ${at}`);
    }
    // The directions' labels differ: the sender's MAC is no receiver's proof, and back.
    assert.equal(await verifyInitAck(keys, t, new Uint8Array(0), mac), false, "INIT MAC reflected as INIT_ACK");
    assert.equal(await verifyInit(keys, t, ackMac), false, "INIT_ACK MAC reflected as INIT");
    const forged = mac.slice();
    forged[MAC_BYTES - 1] ^= 1;
    assert.equal(await verifyInit(keys, t, forged), false);
    assert.equal(await verifyInit(keys, t, mac.subarray(0, MAC_BYTES - 1)), false);
    assert.equal(await verifyInit(keys, t, new Uint8Array(MAC_BYTES)), false);
  });

  test("importSecret requires at least 16 bytes", async () => {
    assert.equal(MIN_SECRET_BYTES, 16);
    const bad: unknown[] = [
      "",
      "x".repeat(15),
      new Uint8Array(15),
      new Uint8Array(0),
      undefined,
      null,
      12345678901234567890,
      Array.from({ length: 32 }, () => 1),
      new Uint16Array(16),
    ];
    for (const secret of bad) {
      // wrapped: the error is thrown synchronously today, a rejection would do as well
      await assert.rejects(async () => await importSecret(secret as string), InvalidArgumentError);
    }
    await importSecret("x".repeat(16));
    await importSecret(new Uint8Array(16));
    await importSecret("\u00e9".repeat(8)); // 8 characters, 16 UTF-8 bytes
    await assert.rejects(async () => await importSecret("\u00e9".repeat(7) + "x"), InvalidArgumentError); // 15 bytes
  });
});
