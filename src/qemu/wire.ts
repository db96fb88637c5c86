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
/**
 * The bytes of a packet header that change from one data packet to the next: `normal_pages`
 * (at 16), `next_packet_size`, `packet_num` and (QEMU ≥ 9.0) `zero_pages` (at 32); every
 * other byte before the offsets is the same in a channel's data packets of one RAM block.
 */
export const MULTIFD_PACKET_PER_PACKET_FIELDS = {
  from: 16,
  to: 36,
  normalPagesAt: 16,
  nextPacketSizeAt: 20,
  packetNumberAt: 24,
  zeroPagesAt: 32,
} as const;
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
  packetNumber: number;
  /** The RAM block's id (empty when the packet carries no page: QEMU leaves it stale). */
  ramBlock: string;
}

/** A RAM block that packets may name: its id (QEMU's RAMBlock idstr) and size in bytes. */
export interface PacketBlock {
  name: string;
  size: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Validates packet headers received into its own buffer, one after the other, with no
 * allocation per packet (a receiver parses 2,048 of them per GiB of RAM, many before
 * the JIT has compiled this code): magic, version, no compression, at most 128 pages; with
 * pages, one of `blocks` named (matched by its id's bytes) and every offset page aligned
 * and inside it. The fields of the last header parsed are this object's; entries past the
 * pages are stale in QEMU's packets: ignored.
 */
export class MultifdPacketReader {
  /** Where the next header is received (MULTIFD_PACKET_HEADER_BYTES). */
  readonly bytes = new Uint8Array(MULTIFD_PACKET_HEADER_BYTES);
  readonly #view = new DataView(this.bytes.buffer);
  readonly #blocks: readonly PacketBlock[];
  /** Each block's id as a packet carries it. */
  readonly #ids: Uint8Array[];
  flags = 0;
  /** `pages_alloc`: the most pages the packet may list (≤ MULTIFD_PAGES_PER_PACKET). */
  pagesAlloc = 0;
  normalPages = 0;
  zeroPages = 0;
  packetNumber = 0;
  /** Index in `blocks` of the block the pages are in; -1 for a packet without pages. */
  block = -1;

  constructor(blocks: readonly PacketBlock[]) {
    this.#blocks = blocks;
    this.#ids = blocks.map((block) => encoder.encode(block.name));
  }

  /** The named block's id ("" for a packet without pages). */
  get ramBlock(): string {
    return this.block < 0 ? "" : this.#blocks[this.block].name;
  }

  /**
   * Validates the header in {@link bytes} and writes the byte offsets of its pages to
   * `offsets`, normal pages first, then zero pages (QEMU ≥ 9.0: `zero_pages` at byte 32,
   * 0 in 7.2). Throws ProtocolError for the first field that is wrong.
   */
  parse(offsets: Float64Array): void {
    const count = this.parseFixed();
    if (count === 0) return;
    if (offsets.length < count) throw new RangeError(`parse: room for ${offsets.length} offsets, not ${count}`);
    // The per-page loop, native (zig/pages.zig); a message only for the offset that fails.
    const valid = native.zc_block_offsets_decode(
      this.bytes,
      MULTIFD_PACKET_FIXED_BYTES,
      count,
      QEMU_PAGE_SIZE,
      this.#blocks[this.block].size,
      offsets,
    );
    if (valid < count) this.refuseOffset(valid);
  }

  /**
   * Validates the header's fixed part (everything but the offsets) and returns how many
   * offsets follow it at MULTIFD_PACKET_FIXED_BYTES (`normalPages + zeroPages`), to be decoded
   * and checked against {@link block} by zig/pages.zig's rule (as {@link parse} does, or the
   * channel's native page receive: wire_reads.ts readWirePagesSync, readWireRunSync).
   */
  parseFixed(): number {
    const view = this.#view;
    if (view.getUint32(0) !== MULTIFD_MAGIC) refuse("qemu.packet.magic", hex(view.getUint32(0)));
    if (view.getUint32(4) !== MULTIFD_VERSION) refuse("qemu.packet.version", `${view.getUint32(4)}`);
    const flags = view.getUint32(8);
    if ((flags & MULTIFD_FLAG_COMPRESSION_MASK) !== 0) {
      refuse("qemu.packet.flags", `compression ${hex(flags)}: multifd-compression is not supported (use none)`);
    }
    if ((flags & ~(MULTIFD_FLAG_SYNC | MULTIFD_FLAG_COMPRESSION_MASK)) !== 0) refuse("qemu.packet.flags", hex(flags));
    const pagesAlloc = view.getUint32(12);
    const normalPages = view.getUint32(MULTIFD_PACKET_PER_PACKET_FIELDS.normalPagesAt);
    if (pagesAlloc > MULTIFD_PAGES_PER_PACKET) refuse("qemu.packet.pagesAlloc", `${pagesAlloc}`);
    const zeroPages = view.getUint32(MULTIFD_PACKET_PER_PACKET_FIELDS.zeroPagesAt);
    if (normalPages + zeroPages > pagesAlloc) {
      refuse("qemu.packet.normalPages", `${normalPages} + ${zeroPages} zero of ${pagesAlloc}`);
    }
    this.flags = flags;
    this.pagesAlloc = pagesAlloc;
    this.normalPages = normalPages;
    this.zeroPages = zeroPages;
    this.packetNumber = view.getUint32(24) * 0x1_0000_0000 + view.getUint32(28);
    const count = normalPages + zeroPages;
    this.block = count === 0 ? -1 : this.#findBlock();
    return count;
  }

  /** Throws the ProtocolError for offset `index` of the header, which is not a page of its block. */
  refuseOffset(index: number): never {
    const offset = this.#view.getBigUint64(MULTIFD_PACKET_FIXED_BYTES + 8 * index);
    const { name, size } = this.#blocks[this.block];
    return refuse("qemu.packet.offset", `${offset} is not a page of block "${name}" (${size} bytes)`);
  }

  /** The index of the block the header names (the id is NUL-terminated within its 256 bytes, at most 255 long). */
  #findBlock(): number {
    const bytes = this.bytes;
    const nul = bytes.indexOf(0, RAMBLOCK_OFFSET);
    const length = nul < 0 || nul >= RAMBLOCK_OFFSET + RAMBLOCK_BYTES - 1 ? RAMBLOCK_BYTES - 1 : nul - RAMBLOCK_OFFSET;
    const ids = this.#ids;
    for (let b = 0; b < ids.length; b++) {
      const id = ids[b];
      if (id.length !== length) continue;
      let i = 0;
      while (i < length && bytes[RAMBLOCK_OFFSET + i] === id[i]) i++;
      if (i === length) return b;
    }
    const name = decoder.decode(bytes.subarray(RAMBLOCK_OFFSET, RAMBLOCK_OFFSET + length));
    return refuse("qemu.packet.ramBlock", `unknown RAM block "${name}"`);
  }
}

/**
 * Validates one packet header (the bytes of {@link MultifdPacketReader.parse}, for tests
 * and fuzzing) and returns its fields; `offsets` as there.
 */
export function parseMultifdPacket(
  bytes: Uint8Array,
  blocks: readonly PacketBlock[],
  offsets: Float64Array,
): MultifdPacketHeader {
  if (bytes.length < MULTIFD_PACKET_HEADER_BYTES) {
    throw new ProtocolError("qemu.packet.length", `${bytes.length} bytes`);
  }
  const reader = new MultifdPacketReader(blocks);
  reader.bytes.set(bytes.subarray(0, MULTIFD_PACKET_HEADER_BYTES));
  reader.parse(offsets);
  const { flags, normalPages, zeroPages, packetNumber, ramBlock } = reader;
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
  const at = MULTIFD_PACKET_PER_PACKET_FIELDS;
  view.setUint32(at.normalPagesAt, count);
  view.setUint32(at.nextPacketSizeAt, count * QEMU_PAGE_SIZE);
  view.setUint32(at.packetNumberAt, Math.floor(packetNumber / 0x1_0000_0000));
  view.setUint32(at.packetNumberAt + 4, packetNumber >>> 0);
  bytes.fill(0, RAMBLOCK_OFFSET, RAMBLOCK_OFFSET + RAMBLOCK_BYTES);
  bytes.set(ramBlock.subarray(0, RAMBLOCK_BYTES - 1), RAMBLOCK_OFFSET);
  encodeOffsets(bytes, MULTIFD_PACKET_FIXED_BYTES, offsets, count); // the per-page loop, native
}

function expect(condition: boolean, field: string, message: string | (() => string)): asserts condition {
  if (!condition) throw new ProtocolError(field, typeof message === "string" ? message : message());
}

/** Throws the ProtocolError for `field` (a function, so that the checks above stay one line each and allocate nothing). */
function refuse(field: string, message: string): never {
  throw new ProtocolError(field, message);
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
