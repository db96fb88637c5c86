// Structured fuzzing of the receiver's packet parsers (parsePacketHeader + parseOffsets),
// as the plain codec (plain_codec.ts) calls them: valid DATA/SYNC/END/VERDICT packets, mutated at field
// boundaries. The parsers must return or throw ProtocolError, agree with an independent
// BigInt model of the rules in docs/PROTOCOL.md, and never accept a DATA packet that
// would make the receiver write outside the region.
//
// The seed differs on every run (printed, and part of every failure message); reproduce a
// run with ZCMF_FUZZ_SEED=<seed> (and WIRE_FUZZ_ITERATIONS=<n> if it was set).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import {
  encodeHello,
  encodeInitFields,
  encodeReply,
  HELLO_BYTES,
  INIT_FIELDS_BYTES,
  MAX_CHANNELS,
  MAX_PAGES_PER_PACKET,
  PACKET_HEADER_BYTES,
  type PacketHeader,
  type PacketLimits,
  PacketType,
  PAGE_SIZE,
  parseHello,
  parseInitFields,
  parseOffsets,
  parsePacketHeader,
  parseReply,
  ProtocolError,
  REPLY_BYTES,
  ReplyType,
  TransferRefusedError,
} from "../src/multifd/wire.ts";
import { native } from "../ffi/mod.ts";
import { moduleRunRule } from "../src/multifd/plain_codec.ts";
import { toHex } from "../util/format.ts";
import { Rng } from "./helpers/rng.ts";

const PAGE = PAGE_SIZE;
const TWO_53 = 2 ** 53;
const U64 = 2n ** 64n;
const PACKET_MAGIC = 0x5a434d50; // "ZCMP", restated: the model must not borrow the code under test

function envNumber(name: string): number | undefined {
  try {
    const value = process.env[name];
    return value === undefined || value === "" ? undefined : Number(value);
  } catch {
    return undefined; // no env permission
  }
}

/** ZCMF_FUZZ_SEED (or the older WIRE_FUZZ_SEED) when set, else a new seed for this run. */
function runSeed(): number {
  const given = envNumber("ZCMF_FUZZ_SEED") ?? envNumber("WIRE_FUZZ_SEED");
  if (given === undefined) return (Date.now() ^ Math.floor(Math.random() * 2 ** 32)) >>> 0;
  if (!Number.isSafeInteger(given)) throw new Error(`ZCMF_FUZZ_SEED must be an integer, got ${given}`);
  return given >>> 0;
}

const SEED = runSeed();
const ITERATIONS = envNumber("WIRE_FUZZ_ITERATIONS") ?? 100_000;
/** Headers tried after a DATA header for the run rule. */
const RUN_HEADERS = Math.max(1, Math.floor(ITERATIONS / 2));
const REPRODUCE = `seed ${SEED}: reproduce with ZCMF_FUZZ_SEED=${SEED}${
  ITERATIONS === 100_000 ? "" : ` WIRE_FUZZ_ITERATIONS=${ITERATIONS}`
}`;
console.log(`wire fuzz: ${REPRODUCE}`);

/** Runs a test body; any failure's message names the seed, so every failure can be replayed. */
function reproducible(body: () => void): () => void {
  return () => {
    try {
      body();
    } catch (error) {
      if (error instanceof Error) error.message = `[${REPRODUCE}] ${error.message}`;
      throw error;
    }
  };
}

interface Case {
  bytes: Uint8Array;
  limits: PacketLimits;
  regionSize: number;
}

// --- valid packets ---

function pickRegionSize(rng: Rng, pagesPerPacket: number): number {
  switch (rng.below(8)) {
    case 0:
      return rng.pick([0, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE - 1, 2 * PAGE]);
    case 1:
    case 2:
    case 3: {
      const pages = rng.range(1, 2 * pagesPerPacket + 3);
      return pages * PAGE - (rng.chance(0.5) ? 0 : rng.range(1, PAGE - 1));
    }
    case 4:
      return rng.pick([2 ** 32 - PAGE, 2 ** 32, 2 ** 32 + 1, 2 ** 32 + PAGE + 17, 64 * 2 ** 30]);
    case 5:
      return rng.range(1, 2 ** 40);
    case 6:
      return rng.pick([TWO_53 - 1, TWO_53 - PAGE, TWO_53 - PAGE + 1, TWO_53 - PAGE - 1, TWO_53 - 2 * PAGE + 17]);
    default:
      return rng.range(1, TWO_53 - 1);
  }
}

/** `count` distinct page indices below `pageCount`: a run (often the last pages) or scattered. */
function pickPages(rng: Rng, pageCount: number, count: number): number[] {
  if (rng.chance(0.4) || count * 2 > pageCount) {
    const start = rng.chance(0.3) ? pageCount - count : rng.below(pageCount - count + 1);
    return Array.from({ length: count }, (_, i) => start + i);
  }
  const chosen = new Set<number>();
  if (rng.chance(0.3)) chosen.add(pageCount - 1);
  if (rng.chance(0.2)) chosen.add(0);
  while (chosen.size < count) chosen.add(rng.below(pageCount));
  return [...chosen].slice(0, count);
}

function pageLength(offset: number, regionSize: number): number {
  return Math.min(PAGE, regionSize - offset);
}

function validCase(rng: Rng): Case {
  const pagesPerPacket = rng.pick([1, 2, 3, 8, 16, 128, 128, MAX_PAGES_PER_PACKET]);
  const regionSize = pickRegionSize(rng, pagesPerPacket);
  const expectedPacketNumber = rng.pick([0, 1, 2, rng.below(1e6), 2 ** 32 - 1, 2 ** 32, TWO_53 - 1]);
  const limits = { expectedPacketNumber, pagesPerPacket, pageSize: PAGE };
  const pageCount = Math.ceil(regionSize / PAGE);
  const kind = rng.below(10);
  if (kind < 7 && pageCount > 0) {
    const most = Math.min(pagesPerPacket, pageCount);
    const count = rng.chance(0.1) ? most : rng.range(1, Math.min(most, 40));
    const zeroShare = rng.pick([0, 0, 0.3, 0.7, 1]);
    const normal: number[] = [];
    const zero: number[] = [];
    for (const page of pickPages(rng, pageCount, count)) (rng.chance(zeroShare) ? zero : normal).push(page * PAGE);
    normal.sort((a, b) => a - b);
    zero.sort((a, b) => a - b);
    const payloadBytes = normal.reduce((sum, offset) => sum + pageLength(offset, regionSize), 0);
    const bytes = new Uint8Array(PACKET_HEADER_BYTES + count * 8);
    const view = new DataView(bytes.buffer);
    writeHeader(view, {
      type: PacketType.DATA,
      packetNumber: expectedPacketNumber,
      normalPages: normal.length,
      zeroPages: zero.length,
      payloadBytes,
      argument: 0,
    });
    [...normal, ...zero].forEach((offset, i) => {
      view.setUint32(PACKET_HEADER_BYTES + i * 8, Math.floor(offset / 2 ** 32));
      view.setUint32(PACKET_HEADER_BYTES + i * 8 + 4, offset % 2 ** 32);
    });
    return { bytes, limits, regionSize };
  }
  const type = rng.pick([PacketType.SYNC, PacketType.END, PacketType.VERDICT]);
  const argument = type === PacketType.SYNC
    ? rng.pick([0, 1, rng.u32()])
    : type === PacketType.VERDICT
    ? rng.below(2)
    : 0;
  const bytes = new Uint8Array(PACKET_HEADER_BYTES);
  writeHeader(new DataView(bytes.buffer), {
    type,
    packetNumber: expectedPacketNumber,
    normalPages: 0,
    zeroPages: 0,
    payloadBytes: 0,
    argument,
  });
  return { bytes, limits, regionSize };
}

/** The header as the sender writes it (restated here, independent of encodePacketHeader). */
function writeHeader(view: DataView, h: PacketHeader): void {
  view.setUint32(0, PACKET_MAGIC);
  view.setUint8(4, h.type);
  view.setBigUint64(8, BigInt(h.packetNumber));
  view.setUint32(16, h.normalPages);
  view.setUint32(20, h.zeroPages);
  view.setUint32(24, h.payloadBytes);
  view.setUint32(28, h.argument);
}

// --- mutations ---

const U32_FIELDS = [16, 20, 24, 28];
const BOUNDARY_BYTES = [0, 3, 4, 5, 6, 7, 8, 9, 14, 15, 16, 19, 20, 23, 24, 27, 28, 31];

function interestingU64(rng: Rng, c: Case, current: bigint): bigint {
  const size = c.regionSize;
  const lastPage = Math.max(0, Math.ceil(size / PAGE) - 1) * PAGE;
  const value = rng.pick<number | bigint>([
    0,
    1,
    PAGE - 1,
    PAGE,
    PAGE + 1,
    c.limits.expectedPacketNumber,
    c.limits.expectedPacketNumber + 1,
    c.limits.expectedPacketNumber - 1,
    size,
    size - 1,
    size + 1,
    lastPage,
    lastPage + PAGE,
    lastPage - PAGE,
    lastPage + 1,
    Math.floor(size / PAGE) * PAGE,
    2 ** 32 - PAGE,
    2 ** 32,
    TWO_53 - PAGE,
    TWO_53 - 1,
    TWO_53,
    TWO_53 + PAGE,
    2n ** 63n,
    U64 - 1n,
    U64 - BigInt(PAGE),
    current + 1n,
    current - 1n,
    current + BigInt(PAGE),
    current - BigInt(PAGE),
    current + BigInt(PAGE - 1),
    current - BigInt(PAGE + 1),
    current ^ (1n << BigInt(rng.below(64))),
  ]);
  return ((BigInt(value) % U64) + U64) % U64;
}

function interestingU32(rng: Rng, c: Case, current: number): number {
  const ppp = c.limits.pagesPerPacket;
  const value = rng.pick([
    0,
    1,
    2,
    ppp - 1,
    ppp,
    ppp + 1,
    MAX_PAGES_PER_PACKET,
    MAX_PAGES_PER_PACKET + 1,
    PAGE - 1,
    PAGE,
    PAGE + 1,
    ppp * PAGE,
    ppp * PAGE + 1,
    0x7fffffff,
    0x80000000,
    0xffffffff,
    current + 1,
    current - 1,
    current + PAGE,
    current - PAGE,
    rng.u32(),
  ]);
  return value >>> 0;
}

function slots(bytes: Uint8Array): number {
  return Math.max(0, Math.floor((bytes.length - PACKET_HEADER_BYTES) / 8));
}

function mutate(rng: Rng, c: Case): void {
  let bytes = c.bytes;
  let view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const n = () => (bytes.length >= PACKET_HEADER_BYTES ? view.getUint32(16) : 0);
  const z = () => (bytes.length >= PACKET_HEADER_BYTES ? view.getUint32(20) : 0);
  const slot = () => PACKET_HEADER_BYTES + rng.below(slots(bytes)) * 8;
  switch (rng.below(14)) {
    case 0: { // bit flips
      for (let i = rng.range(1, 3); i > 0 && bytes.length > 0; i--) bytes[rng.below(bytes.length)] ^= 1 << rng.below(8);
      break;
    }
    case 1: { // byte replaced at a field boundary (header or an offset's first/last byte)
      const positions = [...BOUNDARY_BYTES];
      if (slots(bytes) > 0) positions.push(slot(), slot() + 7);
      const at = rng.pick(positions);
      if (at < bytes.length) bytes[at] = rng.pick([0, 1, 0x7f, 0x80, 0xfe, 0xff, rng.below(256)]);
      break;
    }
    case 2: { // a u32 field set to a boundary value
      if (bytes.length < PACKET_HEADER_BYTES) break;
      const at = rng.pick(U32_FIELDS);
      view.setUint32(at, interestingU32(rng, c, view.getUint32(at)));
      break;
    }
    case 3: { // type, flags, reserved, magic
      if (bytes.length < PACKET_HEADER_BYTES) break;
      const which = rng.below(4);
      if (which === 0) view.setUint8(4, rng.pick([0, 1, 2, 3, 4, 5, 0xff]));
      else if (which === 1) view.setUint8(5, rng.pick([1, 0x80, 0xff]));
      else if (which === 2) view.setUint16(6, rng.pick([1, 0x100, 0xffff]));
      else view.setUint32(0, rng.pick([0, 0x5a434d48, 0x5a434d49, 0x5a434d52, PACKET_MAGIC ^ 1, 0x504d435a]));
      break;
    }
    case 4: { // packet number set to a boundary value
      if (bytes.length < PACKET_HEADER_BYTES) break;
      view.setBigUint64(8, interestingU64(rng, c, view.getBigUint64(8)));
      break;
    }
    case 5: { // an offset set to a boundary value (page size ±1, region size, 2^53, ...)
      if (slots(bytes) === 0) break;
      const at = slot();
      view.setBigUint64(at, interestingU64(rng, c, view.getBigUint64(at)));
      break;
    }
    case 6: { // two offsets swapped (within one list or across the lists)
      if (slots(bytes) < 2) break;
      const a = slot();
      const b = slot();
      const value = view.getBigUint64(a);
      view.setBigUint64(a, view.getBigUint64(b));
      view.setBigUint64(b, value);
      break;
    }
    case 7: { // an offset duplicated into another slot
      if (slots(bytes) < 2) break;
      view.setBigUint64(slot(), view.getBigUint64(slot()));
      break;
    }
    case 8: { // truncation
      c.bytes = bytes = bytes.slice(0, rng.below(bytes.length));
      break;
    }
    case 9: { // the normal/zero boundary moved, page total unchanged
      if (bytes.length < PACKET_HEADER_BYTES) break;
      const delta = rng.pick([-1, 1, -2, 2]);
      view.setUint32(16, (n() + delta) >>> 0);
      view.setUint32(20, (z() - delta) >>> 0);
      break;
    }
    case 10: { // an offset inserted (a page count raised to match, or not)
      const at = PACKET_HEADER_BYTES + rng.below(slots(bytes) + 1) * 8;
      if (at > bytes.length || bytes.length < PACKET_HEADER_BYTES) break;
      const grown = new Uint8Array(bytes.length + 8);
      grown.set(bytes.subarray(0, at));
      grown.set(bytes.subarray(at), at + 8);
      c.bytes = bytes = grown;
      view = new DataView(bytes.buffer);
      const source = slots(bytes) > 1 ? view.getBigUint64(slot()) : 0n;
      view.setBigUint64(at, rng.chance(0.5) ? source : interestingU64(rng, c, source));
      const field = rng.pick([16, 20, -1]);
      if (field > 0) view.setUint32(field, (view.getUint32(field) + 1) >>> 0);
      break;
    }
    case 11: { // an offset removed (a page count lowered to match, or not)
      if (slots(bytes) === 0) break;
      const at = slot();
      const shrunk = new Uint8Array(bytes.length - 8);
      shrunk.set(bytes.subarray(0, at));
      shrunk.set(bytes.subarray(at + 8), at);
      c.bytes = bytes = shrunk;
      view = new DataView(bytes.buffer);
      const field = rng.pick([16, 20, -1]);
      if (field > 0) view.setUint32(field, (view.getUint32(field) - 1) >>> 0);
      break;
    }
    case 12: { // an offset moved by a small amount
      if (slots(bytes) === 0) break;
      const at = slot();
      const delta = BigInt(rng.pick([-PAGE - 1, -PAGE, -PAGE + 1, -1, 1, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE]));
      view.setBigUint64(at, (((view.getBigUint64(at) + delta) % U64) + U64) % U64);
      break;
    }
    default: { // the limits change under the packet: packet number, pages per packet
      if (rng.chance(0.5)) {
        c.limits.expectedPacketNumber = rng.pick([0, c.limits.expectedPacketNumber + 1, TWO_53 - 1]);
      } else c.limits.pagesPerPacket = rng.pick([1, Math.max(1, c.limits.pagesPerPacket - 1), MAX_PAGES_PER_PACKET]);
    }
  }
}

/**
 * Sets payloadBytes to what the normal offsets hold when that is computable, so that the
 * other rules (order, duplicates, region) are reached instead of the payload check.
 */
function fixPayload(c: Case): void {
  const { bytes, regionSize } = c;
  if (bytes.length < PACKET_HEADER_BYTES) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const normal = view.getUint32(16);
  if (normal > slots(bytes)) return;
  let payload = 0;
  for (let i = 0; i < normal; i++) {
    const offset = view.getBigUint64(PACKET_HEADER_BYTES + i * 8);
    if (offset >= BigInt(regionSize)) return;
    payload += Math.min(PAGE, regionSize - Number(offset));
  }
  if (payload <= 0xffffffff) view.setUint32(24, payload);
}

// --- the model: the rules of docs/PROTOCOL.md, with BigInt arithmetic ---

function modelAccepts(c: Case): boolean {
  const { bytes, limits, regionSize } = c;
  if (bytes.length < PACKET_HEADER_BYTES) return false;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const type = bytes[4];
  if (view.getUint32(0) !== PACKET_MAGIC || type < 1 || type > 4 || bytes[5] !== 0 || view.getUint16(6) !== 0) {
    return false;
  }
  const number = view.getBigUint64(8);
  if (number >= 2n ** 53n || number !== BigInt(limits.expectedPacketNumber)) return false;
  const normal = view.getUint32(16);
  const zero = view.getUint32(20);
  const payload = BigInt(view.getUint32(24));
  const argument = view.getUint32(28);
  if (type !== PacketType.DATA) {
    if (normal !== 0 || zero !== 0 || payload !== 0n) return false;
    if (type === PacketType.END) return argument === 0;
    if (type === PacketType.VERDICT) return argument <= 1;
    return true;
  }
  const count = normal + zero;
  if (count < 1 || count > limits.pagesPerPacket || payload > BigInt(normal * PAGE) || argument !== 0) return false;
  if (bytes.length < PACKET_HEADER_BYTES + count * 8) return false;
  const size = BigInt(regionSize);
  const page = BigInt(PAGE);
  const seen = new Set<bigint>();
  let sum = 0n;
  let previous = -1n;
  for (let i = 0; i < count; i++) {
    const offset = view.getBigUint64(PACKET_HEADER_BYTES + i * 8);
    if (offset >= 2n ** 53n || offset % page !== 0n || offset >= size) return false;
    if (i === normal) previous = -1n;
    if (offset <= previous) return false;
    previous = offset;
    if (seen.has(offset)) return false;
    seen.add(offset);
    if (i < normal) sum += size - offset < page ? size - offset : page;
  }
  return sum === payload;
}

// --- the run ---

const FIELDS = [
  "packet.length",
  "packet.magic",
  "packet.type",
  "packet.flags",
  "packet.reserved",
  "packet.number",
  "packet.pages",
  "packet.payloadBytes",
  "packet.argument",
  "packet.offsets",
  "packet.offset",
];

function randomBytes(rng: Rng, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => rng.below(256));
}

// --- handshake and reply messages, and their model (docs/PROTOCOL.md, restated) ---

const HELLO_MAGIC = 0x5a434d48; // "ZCMH"
const INIT_MAGIC = 0x5a434d49; // "ZCMI"
const REPLY_MAGIC = 0x5a434d52; // "ZCMR"
const REPLY_ERROR = 4;
const VERSION = 2;
/** Largest regionSize an INIT may carry: 4 TiB. */
const REGION_LIMIT = 2 ** 42;

type Outcome = { accepted: unknown } | { refused: number } | { rejected: string };

function validMessage(rng: Rng, kind: "hello" | "init" | "reply"): Uint8Array {
  if (kind === "hello") return encodeHello(randomBytes(rng, 32), rng.below(2));
  if (kind === "init") {
    const channelCount = rng.chance(0.2) ? rng.pick([1, MAX_CHANNELS]) : rng.range(1, MAX_CHANNELS);
    return encodeInitFields({
      sessionId: randomBytes(rng, 16),
      channelId: rng.chance(0.2) ? channelCount - 1 : rng.below(channelCount),
      channelCount,
      pageSize: PAGE,
      regionSize: rng.chance(0.2)
        ? rng.pick([0, 1, PAGE, REGION_LIMIT - 1, REGION_LIMIT])
        : rng.below(REGION_LIMIT + 1),
      pagesPerPacket: rng.chance(0.2) ? rng.pick([1, MAX_PAGES_PER_PACKET]) : rng.range(1, MAX_PAGES_PER_PACKET),
      cipher: rng.below(3),
      checksum: rng.below(2),
    });
  }
  return encodeReply({
    type: rng.range(1, 4),
    value: BigInt(rng.u32()) << 32n | BigInt(rng.u32()),
    bytes: rng.below(TWO_53),
    status: rng.below(8),
  });
}

/** A copy of `message`, unchanged (about one in five), cut short, or with bytes or a field changed. */
function mutateMessage(rng: Rng, message: Uint8Array): Uint8Array {
  const bytes = message.slice();
  const view = new DataView(bytes.buffer);
  const choice = rng.below(10);
  if (choice < 2) return bytes;
  if (choice === 2) return bytes.slice(0, rng.below(bytes.length));
  if (choice === 3 && bytes.length === INIT_FIELDS_BYTES) {
    // A field of the INIT set to a boundary value.
    const field = rng.pick([6, 24, 26, 28, 32, 40]);
    if (field === 6) {
      view.setUint16(6, rng.pick([0, 1, 2, 3, 0x100, 0xffff]));
    } else if (field === 32) {
      const value = rng.pick([REGION_LIMIT, REGION_LIMIT + 1, REGION_LIMIT + PAGE, TWO_53 - 1, TWO_53, 2 ** 63]);
      view.setBigUint64(32, BigInt(value));
    } else if (field === 28 || field === 40) {
      view.setUint32(field, rng.pick([0, 1, PAGE - 1, PAGE, PAGE + 1, MAX_PAGES_PER_PACKET, MAX_PAGES_PER_PACKET + 1]));
    } else {
      view.setUint16(field, rng.pick([0, 1, MAX_CHANNELS - 1, MAX_CHANNELS, MAX_CHANNELS + 1, 0xffff]));
    }
    return bytes;
  }
  for (let m = rng.range(1, 3); m > 0; m--) {
    bytes[rng.below(bytes.length)] = rng.chance(0.5) ? rng.below(256) : bytes[rng.below(bytes.length)] ^ 0x80;
  }
  return bytes;
}

function show(value: unknown): string {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? toHex(v) : v));
}

function modelHello(bytes: Uint8Array): Outcome {
  if (bytes.length < HELLO_BYTES) return { rejected: "length" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (view.getUint32(0) !== HELLO_MAGIC || view.getUint16(4) !== VERSION) return { rejected: "header" };
  return { accepted: { nonce: bytes.slice(8, 40), flags: view.getUint16(6) } };
}

function modelInit(bytes: Uint8Array): Outcome {
  if (bytes.length < INIT_FIELDS_BYTES) return { rejected: "length" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const cipher = view.getUint16(6);
  const checksum = view.getUint16(44);
  const ok = view.getUint32(0) === INIT_MAGIC && view.getUint16(4) === VERSION && cipher <= 2 && checksum <= 1 &&
    bytes.subarray(46, 64).every((b) => b === 0);
  const channelId = view.getUint16(24);
  const channelCount = view.getUint16(26);
  const pageSize = view.getUint32(28);
  const regionSize = view.getBigUint64(32);
  const pagesPerPacket = view.getUint32(40);
  if (
    !ok || channelCount < 1 || channelCount > 64 || channelId >= channelCount || pageSize !== 4096 ||
    regionSize > BigInt(REGION_LIMIT) || pagesPerPacket < 1 || pagesPerPacket > 1024
  ) {
    return { rejected: "fields" };
  }
  const sessionId = bytes.slice(8, 24);
  return {
    accepted: {
      sessionId,
      channelId,
      channelCount,
      pageSize,
      regionSize: Number(regionSize),
      pagesPerPacket,
      cipher,
      checksum,
    },
  };
}

function modelReply(bytes: Uint8Array, expected: number): Outcome {
  if (bytes.length < REPLY_BYTES) return { rejected: "length" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const replyBytes = view.getBigUint64(16);
  if (view.getUint32(0) !== REPLY_MAGIC || replyBytes >= 2n ** 53n) return { rejected: "header" };
  const type = bytes[4];
  const status = view.getUint32(24);
  if (type === REPLY_ERROR) return { refused: status };
  if (type !== expected) return { rejected: "type" };
  return { accepted: { type, value: view.getBigUint64(8), bytes: Number(replyBytes), status } };
}

describe("wire fuzz", () => {
  test(
    `packet header + offsets: ${ITERATIONS} structured mutations`,
    reproducible(() => {
      const rng = new Rng(SEED);
      // One reused output buffer per pagesPerPacket, like a receiver channel's: stale values stay in it.
      const outs = new Map<number, Float64Array>();
      const rejectedBy = new Map<string, number>();
      let accepted = 0;
      let acceptedData = 0;
      let acceptedMutated = 0;
      let acceptedZeroPages = 0;
      const started = performance.now();

      for (let iteration = 0; iteration < ITERATIONS; iteration++) {
        const c = validCase(rng);
        const original = c.bytes.slice();
        const mutations = rng.chance(0.1) ? 0 : rng.range(1, 3);
        for (let m = 0; m < mutations; m++) mutate(rng, c);
        if (mutations > 0 && rng.chance(0.5)) fixPayload(c);
        const mutated = mutations > 0 &&
          (c.bytes.length !== original.length || c.bytes.some((b, i) => b !== original[i]));

        const { bytes, limits, regionSize } = c;
        let out: Float64Array | undefined = outs.get(limits.pagesPerPacket);
        if (!out) {
          out = new Float64Array(limits.pagesPerPacket).map(() => rng.below(2 ** 40));
          outs.set(limits.pagesPerPacket, out);
        }
        const where = () =>
          `seed ${SEED} iteration ${iteration}: ${toHex(bytes)} limits ${JSON.stringify(limits)} region ${regionSize}`;

        let header: PacketHeader | undefined;
        let error: unknown;
        // Most packets are rejected: no stack traces for those (they dominate the run time).
        const stackTraceLimit = Error.stackTraceLimit;
        Error.stackTraceLimit = 0;
        try {
          // As plain_codec.ts: a 32-byte header view, then exactly count * 8 offset bytes.
          const headerView = new DataView(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, PACKET_HEADER_BYTES));
          header = parsePacketHeader(headerView, limits);
          if (header.type === PacketType.DATA) {
            const available = Math.max(0, bytes.length - PACKET_HEADER_BYTES);
            const length = Math.min(available, (header.normalPages + header.zeroPages) * 8);
            const offsetView = new DataView(bytes.buffer, bytes.byteOffset + PACKET_HEADER_BYTES, length);
            parseOffsets(offsetView, header, regionSize, PAGE, out);
          }
        } catch (e) {
          error = e;
        } finally {
          Error.stackTraceLimit = stackTraceLimit;
        }

        if (error !== undefined) {
          if (!(error instanceof ProtocolError)) assert.fail(`${where()}: threw ${error}`);
          if (!FIELDS.includes(error.field)) assert.fail(`${where()}: unknown field in ${error.message}`);
          rejectedBy.set(error.field, (rejectedBy.get(error.field) ?? 0) + 1);
          if (modelAccepts(c)) assert.fail(`${where()}: valid packet rejected: ${error.message}`);
          if (mutations === 0) assert.fail(`${where()}: unmutated packet rejected: ${error.message}`);
          continue;
        }
        if (!modelAccepts(c)) assert.fail(`${where()}: invalid packet accepted as ${JSON.stringify(header)}`);
        accepted++;
        if (mutated) acceptedMutated++;
        const h = header!;
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
        if (h.type !== PacketType.DATA) {
          if (h.normalPages !== 0 || h.zeroPages !== 0 || h.payloadBytes !== 0) {
            assert.fail(`${where()}: control pages`);
          }
          continue;
        }
        acceptedData++;
        if (h.zeroPages > 0) acceptedZeroPages++;
        // Accepted DATA: every page the receiver writes (normal: recv, zero: fill) is in the region.
        const count = h.normalPages + h.zeroPages;
        if (count < 1 || count > limits.pagesPerPacket) assert.fail(`${where()}: ${count} pages accepted`);
        const seen = new Set<number>();
        let payload = 0;
        for (let i = 0; i < count; i++) {
          const offset: number = out[i];
          const wire = view.getBigUint64(PACKET_HEADER_BYTES + i * 8);
          const length = Math.min(PAGE, regionSize - offset);
          if (
            !Number.isSafeInteger(offset) || BigInt(offset) !== wire || offset % PAGE !== 0 || offset < 0 ||
            offset >= regionSize || length < 1 || offset + length > regionSize || seen.has(offset)
          ) {
            assert.fail(`${where()}: offset ${i} = ${offset} (wire ${wire}) accepted`);
          }
          seen.add(offset);
          if (i < h.normalPages) payload += length;
        }
        if (payload !== h.payloadBytes) assert.fail(`${where()}: pages hold ${payload}, payload ${h.payloadBytes}`);
      }

      const seconds = (performance.now() - started) / 1000;
      const fields = [...rejectedBy].sort((a, b) => b[1] - a[1]).map(([f, n]) => `${f} ${n}`).join(", ");
      console.log(
        `wire fuzz: seed ${SEED} (0x${SEED.toString(16)}), ${ITERATIONS} packets in ${seconds.toFixed(2)} s: ` +
          `${accepted} accepted (${acceptedData} DATA, ${acceptedZeroPages} with zero pages, ${acceptedMutated} mutated), ` +
          `rejected by ${fields}`,
      );
      // The fuzzer must reach every rule and still produce valid packets, mutated ones included.
      for (const field of FIELDS) assert.ok(rejectedBy.has(field), `no packet rejected by ${field}`);
      assert.ok(ITERATIONS < 10_000 || acceptedData > ITERATIONS / 20, "too few DATA packets accepted");
      assert.ok(ITERATIONS < 10_000 || acceptedMutated > ITERATIONS / 100, "too few mutated packets accepted");
    }),
  );

  test(
    `${RUN_HEADERS} headers after a DATA header: a run goes on exactly when the parser accepts the next DATA packet`,
    reproducible(() => {
      // zig/transfer.zig zc_wire_run_continues with the plain codec's rule (plain_codec.ts
      // moduleRunRule): the native receive goes from a DATA packet to the next without the
      // parser, so it must take exactly the headers the parser would accept as the next one.
      const rng = new Rng(SEED ^ 0x2545f491);
      let continued = 0;
      for (let i = 0; i < RUN_HEADERS; i++) {
        let c: Case;
        do c = validCase(rng); while (c.bytes[4] !== PacketType.DATA);
        const first = c.bytes.slice(0, PACKET_HEADER_BYTES);
        const limits = { ...c.limits, expectedPacketNumber: c.limits.expectedPacketNumber + 1 };
        const rule = moduleRunRule(limits.pagesPerPacket, 8);
        // The header after it: any valid one, often numbered next; then mutated, or not.
        const next = validCase(rng);
        if (rng.chance(0.7)) new DataView(next.bytes.buffer).setBigUint64(8, BigInt(limits.expectedPacketNumber));
        if (rng.chance(0.6)) mutate(rng, next);
        if (next.bytes.length < PACKET_HEADER_BYTES) continue;
        const header = next.bytes.slice(0, PACKET_HEADER_BYTES);
        const continues = native.zc_wire_run_continues(rule, first, header);
        let accepted = false;
        let field = "";
        try {
          accepted = parsePacketHeader(new DataView(header.buffer), limits).type === PacketType.DATA;
        } catch (error) {
          if (!(error instanceof ProtocolError)) throw error;
          field = error.field;
        }
        const where = `seed ${SEED} header ${i}: ${toHex(first)} then ${toHex(header)}`;
        if (accepted) assert.equal(continues, 1, `${where}: accepted by the parser, not by the rule`);
        if (continues === 1 && !accepted) {
          // The two the rule leaves to later: a payload the pages cannot hold (the run checks
          // the payload against the pages themselves, with the same field), and a number past
          // 2^53 (the parser's limit; 2^53 packets are never sent).
          const number = new DataView(header.buffer).getBigUint64(8);
          assert.ok(
            field === "packet.payloadBytes" || (field === "packet.number" && number >= 2n ** 53n),
            `${where}: continues the run, but the parser refuses it (${field})`,
          );
        }
        if (continues === 1) continued++;
      }
      assert.ok(continued > RUN_HEADERS / 10, `only ${continued} headers continued a run: not exploring`);
    }),
  );

  test(
    "handshake and reply parsers agree with the model, unmutated messages included",
    reproducible(() => {
      const rng = new Rng(SEED ^ 0x9e3779b9);
      const count = Math.max(1, Math.floor(ITERATIONS / 6));
      const tally: Record<string, number> = {};
      const counted = (what: string) => (tally[what] = (tally[what] ?? 0) + 1);
      for (let iteration = 0; iteration < count; iteration++) {
        const kind = rng.pick(["hello", "init", "reply"] as const);
        const original = validMessage(rng, kind);
        const input = mutateMessage(rng, original);
        const mutated = input.length !== original.length || input.some((b, i) => b !== original[i]);
        const expectedType = rng.pick([ReplyType.INIT_ACK, ReplyType.SYNC_ACK, ReplyType.RESULT]);
        const where = `seed ${SEED} message ${iteration} (${kind}${mutated ? ", mutated" : ""}): ${toHex(input)}`;

        const model = kind === "hello"
          ? modelHello(input)
          : kind === "init"
          ? modelInit(input)
          : modelReply(input, expectedType);
        let actual: Outcome;
        try {
          const value = kind === "hello"
            ? parseHello(input)
            : kind === "init"
            ? parseInitFields(input)
            : parseReply(input, expectedType);
          actual = { accepted: value };
        } catch (error) {
          if (error instanceof TransferRefusedError) actual = { refused: error.code };
          else if (error instanceof ProtocolError && error.field.startsWith(`${kind}.`)) {
            actual = { rejected: error.field };
          } else throw new Error(`${where}: threw ${error}`);
        }

        // Messages are built only for failures: this loop runs ~17,000 times.
        if (!mutated && (kind !== "reply" || original[4] === expectedType) && !("accepted" in actual)) {
          assert.fail(`${where}: unmutated message not accepted: ${show(actual)}`);
        }
        if ("accepted" in model) {
          if (!("accepted" in actual)) assert.fail(`${where}: valid message rejected: ${show(actual)}`);
          assert.deepEqual(actual.accepted, model.accepted, `${where}: parsed values`);
        } else if ("refused" in model) {
          if (!("refused" in actual) || actual.refused !== model.refused) {
            assert.fail(
              `${where}: an ERROR reply must throw TransferRefusedError(${model.refused}), got ${show(actual)}`,
            );
          }
        } else if (!("rejected" in actual)) {
          assert.fail(`${where}: invalid message (${model.rejected}) accepted: ${show(actual)}`);
        }
        counted(`${kind} ${Object.keys(actual)[0]}${mutated ? "" : " (unmutated)"}`);
      }
      console.log(`wire fuzz: handshake/reply parsers, seed ${SEED}, ${count} messages: ${JSON.stringify(tally)}`);
      if (count >= 1_000) {
        // Every parser must be seen both accepting (mutated messages too) and rejecting.
        for (const what of ["hello accepted", "init accepted", "reply accepted", "reply refused"]) {
          assert.ok(tally[what] > 0, `no mutated message ended ${what}: ${JSON.stringify(tally)}`);
        }
        for (const what of ["hello rejected", "init rejected", "reply rejected"]) {
          assert.ok(tally[what] > 0, `no message ${what}: ${JSON.stringify(tally)}`);
        }
      }
    }),
  );
});
