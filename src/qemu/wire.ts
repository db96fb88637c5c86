/**
 * QEMU's multifd migration format, as QEMU 7.2 speaks it (docs/QEMU.md): the constants,
 * the 64-byte `MultiFDInit_t` a multifd channel opens with, and the 1344-byte header of a
 * `MultiFDPacket_t`. Pure parsing (bytes in, value or ProtocolError out), so it can be fuzzed
 * alone. Every integer is big-endian.
 * @module
 */
import { native } from "../../ffi/mod.ts";
import { encodeOffsets, ProtocolError } from "../multifd/wire.ts";

/** First 4 bytes of a multifd channel (`MULTIFD_MAGIC`). */
export const MULTIFD_MAGIC = 0x11223344;
export const MULTIFD_VERSION = 1;
/** First 4 bytes of the main channel, "QEVM" (`QEMU_VM_FILE_MAGIC`). */
export const QEMU_VM_FILE_MAGIC = 0x5145564d;
export const QEMU_VM_FILE_VERSION = 3;
/** QEMU's target page size on x86-64. */
export const QEMU_PAGE_SIZE = 4096;
export const MULTIFD_INIT_BYTES = 64;
/** Offsets per packet: 512 KiB of 4 KiB pages (`MULTIFD_PACKET_SIZE` / page size). */
export const MULTIFD_PAGES_PER_PACKET = 128;
/** The fixed part of `MultiFDPacket_t` (magic … ramblock), before the offset array. */
export const MULTIFD_PACKET_FIXED_BYTES = 320;
/** Every packet header on the wire: the fixed part and all 128 offsets, used or not. */
export const MULTIFD_PACKET_HEADER_BYTES = MULTIFD_PACKET_FIXED_BYTES + 8 * MULTIFD_PAGES_PER_PACKET;
export const MULTIFD_FLAG_SYNC = 1;
/** Bits 1..5: compression (0 = none) in 7.2 (1..3) and later (1..5). */
export const MULTIFD_FLAG_COMPRESSION_MASK = 0x1f << 1;
const RAMBLOCK_OFFSET = 64;
const RAMBLOCK_BYTES = 256;
const UUID_BYTES = 16;

/** A multifd channel's opening: which channel it is (0..N−1). */
export interface MultifdInit {
  channelId: number;
}

/** Validates a `MultiFDInit_t` (magic, version, the all-zero uuid of a QEMU without -uuid, id < channels). */
export function parseMultifdInit(bytes: Uint8Array, channels: number): MultifdInit {
  if (bytes.length < MULTIFD_INIT_BYTES) throw new ProtocolError("qemu.init.length", `${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, MULTIFD_INIT_BYTES);
  expect(view.getUint32(0) === MULTIFD_MAGIC, "qemu.init.magic", () => hex(view.getUint32(0)));
  expect(view.getUint32(4) === MULTIFD_VERSION, "qemu.init.version", () => `${view.getUint32(4)}`);
  for (let i = 8; i < 8 + UUID_BYTES; i++) {
    expect(bytes[i] === 0, "qemu.init.uuid", "QEMU started with -uuid: not supported (use no -uuid)");
  }
  const channelId = bytes[24];
  expect(channelId < channels, "qemu.init.id", () => `channel ${channelId} of ${channels} (multifd-channels differ?)`);
  return { channelId };
}

export interface MultifdPacketHeader {
  flags: number;
  normalPages: number;
  /** All-zero pages listed after the normal ones (QEMU ≥ 9.0's multifd zero-page detection; 0 in 7.2). */
  zeroPages: number;
  packetNumber: bigint;
  /** The RAM block's id (empty when the packet carries no page: QEMU leaves it stale). */
  ramBlock: string;
}

const decoder = new TextDecoder();

/**
 * Validates a packet header (1344 bytes) and writes the byte offsets of its pages to
 * `offsets`, normal pages first, then zero pages (QEMU ≥ 9.0: `zero_pages` at byte 32, 0 in
 * 7.2): magic, version, no compression, at most 128 pages; with pages, a named RAM block
 * whose size `blockSize` returns (undefined: unknown block) and every offset page aligned
 * and inside it. Entries past the pages are stale in QEMU's packets: ignored.
 */
export function parseMultifdPacket(
  bytes: Uint8Array,
  blockSize: (name: string) => number | undefined,
  offsets: Float64Array,
): MultifdPacketHeader {
  if (bytes.length < MULTIFD_PACKET_HEADER_BYTES) {
    throw new ProtocolError("qemu.packet.length", `${bytes.length} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, MULTIFD_PACKET_HEADER_BYTES);
  expect(view.getUint32(0) === MULTIFD_MAGIC, "qemu.packet.magic", () => hex(view.getUint32(0)));
  expect(view.getUint32(4) === MULTIFD_VERSION, "qemu.packet.version", () => `${view.getUint32(4)}`);
  const flags = view.getUint32(8);
  expect(
    (flags & MULTIFD_FLAG_COMPRESSION_MASK) === 0,
    "qemu.packet.flags",
    () => `compression ${hex(flags)}: multifd-compression is not supported (use none)`,
  );
  expect((flags & ~(MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK)) === 0, "qemu.packet.flags", () => hex(flags));
  const pagesAlloc = view.getUint32(12);
  const normalPages = view.getUint32(16);
  expect(pagesAlloc <= MULTIFD_PAGES_PER_PACKET, "qemu.packet.pagesAlloc", () => `${pagesAlloc}`);
  const zeroPages = view.getUint32(32);
  expect(
    normalPages + zeroPages <= pagesAlloc,
    "qemu.packet.normalPages",
    () => `${normalPages} + ${zeroPages} zero of ${pagesAlloc}`,
  );
  const packetNumber = view.getBigUint64(24);
  let ramBlock = "";
  if (normalPages + zeroPages > 0) {
    const name = bytes.subarray(RAMBLOCK_OFFSET, RAMBLOCK_OFFSET + RAMBLOCK_BYTES - 1);
    const end = name.indexOf(0);
    ramBlock = decoder.decode(end < 0 ? name : name.subarray(0, end));
    const size = blockSize(ramBlock);
    expect(size !== undefined, "qemu.packet.ramBlock", () => `unknown RAM block "${ramBlock}"`);
    const count = normalPages + zeroPages;
    if (offsets.length < count) {
      throw new RangeError(`parseMultifdPacket: room for ${offsets.length} offsets, not ${count}`);
    }
    // The per-page loop, native (zig/pages.zig); a message only for the offset that fails.
    const valid = native.zc_block_offsets_decode(
      bytes,
      MULTIFD_PACKET_FIXED_BYTES,
      count,
      QEMU_PAGE_SIZE,
      size!,
      offsets,
    );
    if (valid < count) {
      const offset = view.getBigUint64(MULTIFD_PACKET_FIXED_BYTES + 8 * valid);
      throw new ProtocolError("qemu.packet.offset", `${offset} is not a page of block "${ramBlock}" (${size} bytes)`);
    }
  }
  return { flags, normalPages, zeroPages, packetNumber, ramBlock };
}

/** Encodes a `MultiFDInit_t` (for tests and the source side). */
export function encodeMultifdInit(channelId: number): Uint8Array {
  const bytes = new Uint8Array(MULTIFD_INIT_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MULTIFD_MAGIC);
  view.setUint32(4, MULTIFD_VERSION);
  bytes[24] = channelId;
  return bytes;
}

/** Encodes a packet header: `offsets[0..count)` in block `ramBlock`; `sync` sets MULTIFD_FLAG_SYNC. */
export function encodeMultifdPacket(
  ramBlock: string,
  offsets: ArrayLike<number>,
  count: number,
  packetNumber: number,
  sync: boolean,
): Uint8Array {
  const bytes = new Uint8Array(MULTIFD_PACKET_HEADER_BYTES);
  writeMultifdPacket(
    new DataView(bytes.buffer),
    new TextEncoder().encode(ramBlock),
    Float64Array.from(offsets),
    count,
    packetNumber,
    sync,
  );
  return bytes;
}

/**
 * {@link encodeMultifdPacket} into a header of MULTIFD_PACKET_HEADER_BYTES reused packet
 * after packet (`ramBlock`: the block id's bytes); entries past `count` are left as they are.
 */
export function writeMultifdPacket(
  view: DataView,
  ramBlock: Uint8Array,
  offsets: Float64Array,
  count: number,
  packetNumber: number,
  sync: boolean,
): void {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, MULTIFD_PACKET_HEADER_BYTES);
  view.setUint32(0, MULTIFD_MAGIC);
  view.setUint32(4, MULTIFD_VERSION);
  view.setUint32(8, sync ? MULTIFD_FLAG_SYNC : 0);
  view.setUint32(12, MULTIFD_PAGES_PER_PACKET);
  view.setUint32(16, count);
  view.setUint32(20, count * QEMU_PAGE_SIZE);
  view.setUint32(24, Math.floor(packetNumber / 0x1_0000_0000));
  view.setUint32(28, packetNumber >>> 0);
  bytes.fill(0, RAMBLOCK_OFFSET, RAMBLOCK_OFFSET + RAMBLOCK_BYTES);
  bytes.set(ramBlock.subarray(0, RAMBLOCK_BYTES - 1), RAMBLOCK_OFFSET);
  encodeOffsets(bytes, MULTIFD_PACKET_FIXED_BYTES, offsets, count); // the per-page loop, native
}

function expect(condition: boolean, field: string, message: string | (() => string)): asserts condition {
  if (!condition) throw new ProtocolError(field, typeof message === "string" ? message : message());
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
