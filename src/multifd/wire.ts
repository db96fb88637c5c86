/**
 * The multifd wire format (docs/PROTOCOL.md): every message has a fixed-size big-endian
 * header; this module encodes and validates them and holds every protocol constant.
 * Parsing is pure (bytes in, value or ProtocolError out), so it can be fuzzed alone.
 * @module
 */
import { native } from "../../ffi/mod.ts";
import { ZeroCopyMultifdError } from "../errors.ts";
import type { WirePagesRejection } from "../wire_reads.ts";

export const PROTOCOL_VERSION = 2;
/** Bytes per page: the unit of multifd transfers (the page indices of `sendRound` count these). */
export const PAGE_SIZE = 4096;
/**
 * Default number of pages in one data packet (1024 x 4 KiB = 4 MiB, the largest): fewer,
 * larger packets cost less per byte on both ends (bench/RESULTS.md, "Larger packets" and
 * "4 MiB packets"). A round too small to give each channel a full packet is split evenly.
 */
export const DEFAULT_PAGES_PER_PACKET = 1024;
/** Largest `pagesPerPacket` a sender may use (1024 x 4 KiB = 4 MiB per packet). */
export const MAX_PAGES_PER_PACKET = 1024;
/** Most channels one transfer may use (the largest `channels` option). */
export const MAX_CHANNELS = 64;
/** Default limit for one channel's handshake, on both sides (ms). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Largest region the protocol moves: 4 TiB. Page indices (u32 in page lists) and the
 * senders' shared packet cursor (an Int32, claimed with Atomics.add, which may run past
 * the last packet by one per channel) stay far from overflow at one page per packet.
 */
export const MAX_REGION_BYTES = 2 ** 42;

export const HELLO_MAGIC = 0x5a434d48; // "ZCMH"
export const INIT_MAGIC = 0x5a434d49; // "ZCMI"
export const PACKET_MAGIC = 0x5a434d50; // "ZCMP"
export const REPLY_MAGIC = 0x5a434d52; // "ZCMR"

export const NONCE_BYTES = 32;
export const SESSION_ID_BYTES = 16;
export const MAC_BYTES = 32;
export const HELLO_BYTES = 48;
/** INIT: its fields, then the sender's nonce, then the sender's MAC (auth.ts). */
export const INIT_FIELDS_BYTES = 64;
export const INIT_NONCE_OFFSET = INIT_FIELDS_BYTES;
export const INIT_MAC_OFFSET = INIT_NONCE_OFFSET + NONCE_BYTES;
export const INIT_BYTES = INIT_MAC_OFFSET + MAC_BYTES;
export const PACKET_HEADER_BYTES = 32;
/**
 * Where a packet header's numeric fields are (docs/PROTOCOL.md; big-endian): the packet
 * number (u64), the counts of pages with data and of zero pages, the payload bytes and the
 * argument (u32 each). Before them: the magic (u32), type (u8), flags (u8), reserved (u16).
 */
export const PACKET_HEADER_FIELDS = {
  packetNumber: 8,
  normalPages: 16,
  zeroPages: 20,
  payloadBytes: 24,
  argument: 28,
} as const;
export const OFFSET_BYTES = 8;
export const REPLY_BYTES = 32;
/** INIT_ACK: the reply, then the receiver's MAC over the transcript and the reply (auth.ts). */
export const INIT_ACK_BYTES = REPLY_BYTES + MAC_BYTES;

export const PacketType = { DATA: 1, SYNC: 2, END: 3, VERDICT: 4 } as const;
export const ReplyType = { INIT_ACK: 1, SYNC_ACK: 2, RESULT: 3, ERROR: 4 } as const;

/** Why a receiver refused a channel or stopped a transfer (ERROR reply status). */
export const RefusalCode = {
  SESSION_MISMATCH: 1,
  BAD_CHANNEL_ID: 2,
  DUPLICATE_CHANNEL: 3,
  REGION_TOO_LARGE: 4,
  BAD_PARAMETERS: 5,
  DESTINATION_FAILED: 6,
  ABORTED: 7,
  ENCRYPTION_REQUIRED: 8,
} as const;

const REFUSAL_TEXT: Record<number, string> = {
  [RefusalCode.SESSION_MISMATCH]: "another session is using this receiver",
  [RefusalCode.BAD_CHANNEL_ID]: "channel id out of range",
  [RefusalCode.DUPLICATE_CHANNEL]: "channel id already connected",
  [RefusalCode.REGION_TOO_LARGE]: "region larger than the receiver's limit (--max-size)",
  [RefusalCode.BAD_PARAMETERS]: "unsupported page size, packet size or channel count",
  [RefusalCode.DESTINATION_FAILED]: "the receiver could not prepare the destination",
  [RefusalCode.ABORTED]: "the receiver aborted the transfer",
  [RefusalCode.ENCRYPTION_REQUIRED]: "the receiver accepts encrypted channels only (encrypt)",
};

export function refusalText(code: number): string {
  return REFUSAL_TEXT[code] ?? `unknown refusal code ${code}`;
}

/** The peer broke the protocol; `field` names what was wrong. */
export class ProtocolError extends ZeroCopyMultifdError {
  /** Always "ProtocolError", so errors stay recognisable in logs and across Workers. */
  override name = "ProtocolError";
  /** `field`: the part of the message that was wrong, e.g. "packet.type"; `message`: what was wrong with it. */
  constructor(readonly field: string, message: string) {
    super(`protocol violation (${field}): ${message}`);
  }
}

/** The receiver refused the transfer with an ERROR reply. */
export class TransferRefusedError extends ZeroCopyMultifdError {
  /** Always "TransferRefusedError", so errors stay recognisable in logs and across Workers. */
  override name = "TransferRefusedError";
  /** `code`: the ERROR reply's refusal code (docs/PROTOCOL.md); the message says what it means. */
  constructor(readonly code: number) {
    super(`receiver refused: ${refusalText(code)}`);
  }
}

// --- handshake ---

/**
 * What a receiver tells the sender in HELLO (bits of a u16 older receivers send as 0 and
 * older senders ignore). Unauthenticated: it only steers the sender's choice among
 * algorithms that are all secure (the choice itself travels in the authenticated INIT).
 */
export const HelloFlag = {
  /** This receiver computes AEGIS-128L-MAC on AES instructions (checksum.ts): the sender may choose it. */
  FAST_AEGIS_CHECKSUM: 1,
} as const;

export function encodeHello(nonce: Uint8Array, flags = 0): Uint8Array {
  const bytes = new Uint8Array(HELLO_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, HELLO_MAGIC);
  view.setUint16(4, PROTOCOL_VERSION);
  view.setUint16(6, flags);
  bytes.set(nonce, 8);
  return bytes;
}

/** Returns the receiver's nonce and flags ({@link HelloFlag}; unknown bits ignored). */
export function parseHello(bytes: Uint8Array): { nonce: Uint8Array; flags: number } {
  const view = viewOf(bytes, HELLO_BYTES, "hello");
  expect(view.getUint32(0) === HELLO_MAGIC, "hello.magic", "not a zerocopy-multifd receiver");
  expect(view.getUint16(4) === PROTOCOL_VERSION, "hello.version", () => versionMismatch(view.getUint16(4), "receiver"));
  return { nonce: bytes.slice(8, 8 + NONCE_BYTES), flags: view.getUint16(6) };
}

function versionMismatch(version: number, peer: string): string {
  const older = version < PROTOCOL_VERSION ? ", an older zerocopy-multifd: upgrade it" : "";
  return `the ${peer} speaks protocol version ${version}${older}; this one speaks version ${PROTOCOL_VERSION}`;
}

export interface Init {
  sessionId: Uint8Array;
  channelId: number;
  channelCount: number;
  pageSize: number;
  regionSize: number;
  pagesPerPacket: number;
  /** 0: plain packets; else the cipher of encrypted channels (aead.ts CIPHER_IDS). */
  cipher: number;
  /** The region checksum's algorithm (checksum.ts CHECKSUM_ALGORITHM_IDS): 0 BLAKE3, 1 AEGIS-128L-MAC. */
  checksum: number;
}

/** Largest cipher id (aead.ts CIPHER_IDS). */
export const MAX_CIPHER_ID = 2;
/** Largest checksum algorithm id (checksum.ts CHECKSUM_ALGORITHM_IDS). */
export const MAX_CHECKSUM_ID = 1;

/** The INIT fields (without MAC). */
export function encodeInitFields(init: Init): Uint8Array {
  const bytes = new Uint8Array(INIT_FIELDS_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, INIT_MAGIC);
  view.setUint16(4, PROTOCOL_VERSION);
  view.setUint16(6, init.cipher);
  bytes.set(init.sessionId, 8);
  view.setUint16(24, init.channelId);
  view.setUint16(26, init.channelCount);
  view.setUint32(28, init.pageSize);
  setUint64(view, 32, init.regionSize);
  view.setUint32(40, init.pagesPerPacket);
  view.setUint16(44, init.checksum);
  return bytes;
}

/** Validates the INIT fields (the MAC is checked by the caller first). */
export function parseInitFields(bytes: Uint8Array): Init {
  const view = viewOf(bytes, INIT_FIELDS_BYTES, "init");
  expect(view.getUint32(0) === INIT_MAGIC, "init.magic", "not a zerocopy-multifd sender");
  expect(view.getUint16(4) === PROTOCOL_VERSION, "init.version", () => versionMismatch(view.getUint16(4), "sender"));
  expect(view.getUint16(6) <= MAX_CIPHER_ID, "init.cipher", () => `unknown cipher ${view.getUint16(6)}`);
  expect(
    view.getUint16(44) <= MAX_CHECKSUM_ID,
    "init.checksum",
    () => `unknown checksum algorithm ${view.getUint16(44)}`,
  );
  for (let i = 46; i < INIT_FIELDS_BYTES; i++) expect(bytes[i] === 0, "init.reserved", "reserved bytes not zero");
  const init: Init = {
    sessionId: bytes.slice(8, 8 + SESSION_ID_BYTES),
    channelId: view.getUint16(24),
    channelCount: view.getUint16(26),
    pageSize: view.getUint32(28),
    regionSize: getUint64(view, 32, "init.regionSize"),
    pagesPerPacket: view.getUint32(40),
    cipher: view.getUint16(6),
    checksum: view.getUint16(44),
  };
  expect(
    init.channelCount >= 1 && init.channelCount <= MAX_CHANNELS,
    "init.channelCount",
    () => `${init.channelCount}`,
  );
  expect(init.channelId < init.channelCount, "init.channelId", () => `${init.channelId} of ${init.channelCount}`);
  expect(
    init.regionSize <= MAX_REGION_BYTES,
    "init.regionSize",
    () => `${init.regionSize} exceeds the protocol's limit of ${MAX_REGION_BYTES} bytes`,
  );
  expect(init.pageSize === PAGE_SIZE, "init.pageSize", () => `${init.pageSize} (only ${PAGE_SIZE} is supported)`);
  expect(
    init.pagesPerPacket >= 1 && init.pagesPerPacket <= MAX_PAGES_PER_PACKET,
    "init.pagesPerPacket",
    `${init.pagesPerPacket}`,
  );
  return init;
}

// --- data path ---

export interface PacketHeader {
  type: number;
  packetNumber: number;
  normalPages: number;
  zeroPages: number;
  payloadBytes: number;
  /** SYNC: the sync's number; VERDICT: 1 when the checksums matched. */
  argument: number;
}

export function encodePacketHeader(view: DataView, header: PacketHeader): void {
  view.setUint32(0, PACKET_MAGIC);
  view.setUint8(4, header.type);
  view.setUint8(5, 0);
  view.setUint16(6, 0);
  const at = PACKET_HEADER_FIELDS;
  setUint64(view, at.packetNumber, header.packetNumber);
  view.setUint32(at.normalPages, header.normalPages);
  view.setUint32(at.zeroPages, header.zeroPages);
  view.setUint32(at.payloadBytes, header.payloadBytes);
  view.setUint32(at.argument, header.argument);
}

/** What a receiver channel expects next; parsing checks every field against it. */
export interface PacketLimits {
  expectedPacketNumber: number;
  pagesPerPacket: number;
  pageSize: number;
}

export function parsePacketHeader(view: DataView, limits: PacketLimits): PacketHeader {
  expect(view.byteLength >= PACKET_HEADER_BYTES, "packet.length", () => `${view.byteLength} bytes`);
  expect(view.getUint32(0) === PACKET_MAGIC, "packet.magic", () => `0x${view.getUint32(0).toString(16)}`);
  const type = view.getUint8(4);
  expect(type >= PacketType.DATA && type <= PacketType.VERDICT, "packet.type", () => `${type}`);
  expect(view.getUint8(5) === 0, "packet.flags", () => `unknown flags 0x${view.getUint8(5).toString(16)}`);
  expect(view.getUint16(6) === 0, "packet.reserved", "not zero");
  const at = PACKET_HEADER_FIELDS;
  const header: PacketHeader = {
    type,
    packetNumber: getUint64(view, at.packetNumber, "packet.number"),
    normalPages: view.getUint32(at.normalPages),
    zeroPages: view.getUint32(at.zeroPages),
    payloadBytes: view.getUint32(at.payloadBytes),
    argument: view.getUint32(at.argument),
  };
  expect(
    header.packetNumber === limits.expectedPacketNumber,
    "packet.number",
    `${header.packetNumber}, expected ${limits.expectedPacketNumber}`,
  );
  const pages = header.normalPages + header.zeroPages;
  if (type === PacketType.DATA) {
    expect(
      pages >= 1 && pages <= limits.pagesPerPacket,
      "packet.pages",
      () => `${pages} (limit ${limits.pagesPerPacket})`,
    );
    expect(
      header.payloadBytes <= header.normalPages * limits.pageSize,
      "packet.payloadBytes",
      `${header.payloadBytes} for ${header.normalPages} pages`,
    );
    expect(header.argument === 0, "packet.argument", "not zero");
  } else {
    expect(pages === 0 && header.payloadBytes === 0, "packet.pages", () => `${type} packet carries pages`);
    if (type === PacketType.VERDICT) expect(header.argument <= 1, "packet.argument", () => `${header.argument}`);
    if (type === PacketType.END) expect(header.argument === 0, "packet.argument", "not zero");
  }
  return header;
}

/**
 * Validates a DATA packet's offsets (normal pages first, then zero pages), big-endian u64
 * each, and writes them as numbers into `out`. Every offset must be page-aligned and
 * inside the region; each list strictly increasing; no offset in both lists; the normal
 * pages' lengths (the last page of the region may be short) must add up to the payload.
 */
export function parseOffsets(
  wire: ArrayBufferView,
  header: PacketHeader,
  regionSize: number,
  pageSize: number,
  out: Float64Array,
): void {
  const { normalPages } = header;
  const count = normalPages + header.zeroPages;
  expect(wire.byteLength >= count * OFFSET_BYTES && out.length >= count, "packet.offsets", "truncated");
  const bytes = wire instanceof Uint8Array ? wire : new Uint8Array(wire.buffer, wire.byteOffset, wire.byteLength);
  // The receive path's per-page loop, native (zig/pages.zig); a message only for the offset that fails.
  const valid = native.zc_offsets_decode(bytes, count, normalPages, pageSize, regionSize, out);
  if (valid < 0) refuseOffsets({ reason: "bothLists", index: -1 - valid }, bytes, 0, header, pageSize, regionSize);
  if (valid < count) refuseOffsets({ reason: "offset", index: valid }, bytes, 0, header, pageSize, regionSize);
  // Strictly increasing: only the last normal page can be the region's short last page.
  const payload = normalPages === 0
    ? 0
    : (normalPages - 1) * pageSize + Math.min(pageSize, regionSize - out[normalPages - 1]);
  if (payload !== header.payloadBytes) {
    refuseOffsets({ reason: "payload", pagesHold: payload }, bytes, 0, header, pageSize, regionSize);
  }
}

/**
 * Throws the ProtocolError for a packet's offsets (at `wire[at..]`) that broke the rules
 * {@link parseOffsets} checks, as found by it or by the channel's native packet receive
 * (wire_reads.ts readWireRunSync, `WireLayout.module`).
 */
export function refuseOffsets(
  rejection: WirePagesRejection,
  wire: Uint8Array,
  at: number,
  header: PacketHeader,
  pageSize: number,
  regionSize: number,
): never {
  const view = new DataView(wire.buffer, wire.byteOffset + at, wire.byteLength - at);
  switch (rejection.reason) {
    case "bothLists": {
      const offset = getUint64(view, rejection.index * OFFSET_BYTES, "packet.offset");
      throw new ProtocolError("packet.offset", `${offset} is both a normal and a zero page`);
    }
    case "offset":
      return badOffset(getUint64(view, rejection.index * OFFSET_BYTES, "packet.offset"), pageSize, regionSize);
    case "payload":
      throw new ProtocolError("packet.payloadBytes", `${header.payloadBytes}, pages hold ${rejection.pagesHold}`);
  }
}

function badOffset(offset: number, pageSize: number, regionSize: number): never {
  expect(offset % pageSize === 0, "packet.offset", () => `${offset} is not page-aligned`);
  expect(offset < regionSize, "packet.offset", () => `${offset} is outside the region of ${regionSize} bytes`);
  throw new ProtocolError("packet.offset", `${offset} out of order or repeated`);
}

export interface Reply {
  type: number;
  value: bigint;
  bytes: number;
  status: number;
}

export function encodeReply(reply: Reply): Uint8Array {
  const bytes = new Uint8Array(REPLY_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, REPLY_MAGIC);
  view.setUint8(4, reply.type);
  view.setBigUint64(8, reply.value);
  setUint64(view, 16, reply.bytes);
  view.setUint32(24, reply.status);
  return bytes;
}

/** The packet type of each control packet (codec.ts ControlKind). */
export const CONTROL_PACKET_TYPE = { sync: PacketType.SYNC, end: PacketType.END, verdict: PacketType.VERDICT } as const;

export function encodeSyncAck(syncNumber: number): Uint8Array {
  return encodeReply({ type: ReplyType.SYNC_ACK, value: BigInt(syncNumber), bytes: 0, status: 0 });
}

/** Checks a SYNC_ACK acknowledges SYNC `syncNumber`. */
export function checkSyncAck(bytes: Uint8Array, syncNumber: number): void {
  const { value } = parseReply(bytes, ReplyType.SYNC_ACK);
  expect(value === BigInt(syncNumber), "reply.value", () => `SYNC_ACK ${value}, expected ${syncNumber}`);
}

/** RESULT: the reply (its value 0, `bytes` the payload received), then the region checksum. */
export function encodeResult(checksum: Uint8Array, bytes: number): Uint8Array {
  const out = new Uint8Array(REPLY_BYTES + checksum.length);
  out.set(encodeReply({ type: ReplyType.RESULT, value: 0n, bytes, status: 0 }));
  out.set(checksum, REPLY_BYTES);
  return out;
}

/** Reads a RESULT of `length` bytes: the receiver's checksum (after the reply) and payload bytes. */
export function parseResult(result: Uint8Array, length: number): { checksum: Uint8Array; bytes: number } {
  const { bytes } = parseReply(result, ReplyType.RESULT);
  expect(result.length >= length, "result.length", () => `${result.length} bytes, expected ${length}`);
  return { checksum: result.slice(REPLY_BYTES, length), bytes };
}

/** Parses a reply and checks it is of `expected` type (an ERROR reply throws TransferRefusedError). */
export function parseReply(bytes: Uint8Array, expected: number): Reply {
  const view = viewOf(bytes, REPLY_BYTES, "reply");
  expect(view.getUint32(0) === REPLY_MAGIC, "reply.magic", () => `0x${view.getUint32(0).toString(16)}`);
  const reply: Reply = {
    type: view.getUint8(4),
    value: view.getBigUint64(8),
    bytes: getUint64(view, 16, "reply.bytes"),
    status: view.getUint32(24),
  };
  if (reply.type === ReplyType.ERROR) throw new TransferRefusedError(reply.status);
  expect(reply.type === expected, "reply.type", () => `${reply.type}, expected ${expected}`);
  return reply;
}

// --- helpers ---

/** `message` is a function where it formats values: the data path must not build strings that are not thrown. */
function expect(condition: boolean, field: string, message: string | (() => string)): asserts condition {
  if (!condition) throw new ProtocolError(field, typeof message === "string" ? message : message());
}

function viewOf(bytes: Uint8Array, length: number, what: string): DataView {
  expect(bytes.length >= length, `${what}.length`, () => `${bytes.length} bytes, expected ${length}`);
  return new DataView(bytes.buffer, bytes.byteOffset, length);
}

function setUint64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 0x1_0000_0000));
  view.setUint32(at + 4, value >>> 0);
}

/** A u64 that must fit a JS number exactly (offsets, sizes, counters). */
function getUint64(view: DataView, at: number, field: string): number {
  const high = view.getUint32(at);
  expect(high < 0x20_0000, field, "larger than 2^53");
  return high * 0x1_0000_0000 + view.getUint32(at + 4);
}

/** Writes a big-endian u64 offset. */
export const writeOffset = setUint64;

/**
 * Writes `offsets[0..count)` as big-endian u64s into `wire` from byte `at` (the sender's
 * per-page loop, native); returns the byte after them.
 */
export function encodeOffsets(wire: Uint8Array, at: number, offsets: Float64Array, count: number): number {
  const end = at + count * OFFSET_BYTES;
  if (end > wire.byteLength || count > offsets.length) throw new RangeError("encodeOffsets: offsets do not fit");
  if (count > 0) native.zc_offsets_encode(offsets, count, wire, at);
  return end;
}
