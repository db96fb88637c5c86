/**
 * QEMU's multifd channel format (QEMU 7.2 to 10.0; src/qemu/wire.ts) behind the codec seam:
 * each packet is a 1344-byte header naming a RAM block and up to 128 page offsets, then
 * those pages (pages listed as zero, QEMU ≥ 9.0, are zero-filled in place); a packet with the SYNC flag ends a section's part of that channel (after its pages,
 * if it has any). QEMU sends nothing but packets after the channel's opening, expects no
 * reply, and ends a channel by closing it.
 * @module
 */
import { addressOf } from "../../ffi/mod.ts";
import { InvalidArgumentError } from "../errors.ts";
import type { RegionDescriptor } from "../region.ts";
import {
  packetsPerRun,
  RULE_MAX_COUNT,
  WireLayout,
  type WirePacket,
  type WireRun,
  wireRunRule,
} from "../wire_reads.ts";
import { type SendRun, wireSendRule } from "../wire_writes.ts";
import type {
  CodecConfig,
  ControlKind,
  Incoming,
  Outgoing,
  PacketInput,
  Populate,
  ReceiveCodec,
  SendCodec,
  WireFormat,
} from "../multifd/codec.ts";
import { pageRanges, PageScan, Ranges } from "../multifd/packet.ts";
import {
  MULTIFD_FLAG_SYNC,
  MULTIFD_PACKET_FIXED_BYTES,
  MULTIFD_PACKET_HEADER_BYTES,
  MULTIFD_PACKET_PER_PACKET_FIELDS,
  MULTIFD_PAGES_PER_PACKET,
  MultifdPacketReader,
  QEMU_PAGE_SIZE,
  writeMultifdPacket,
} from "./wire.ts";

/** The block id of a packet without pages (QEMU leaves its own stale; an empty one is as good). */
const NO_BLOCK = new Uint8Array(0);
const NO_PAGES = new Float64Array(0);
/**
 * @internal The run rule (wire_reads.ts {@link wireRunRule}) for QEMU's packets: a following
 * header continues a run when every byte of its fixed part outside the per-packet fields is
 * the one `parseFixed` validated — magic, version, flags (so no SYNC), `pages_alloc`, the
 * unused words, the block's name — and its two counts together list 1 to `pages_alloc`
 * pages: then `parseFixed` would accept it and name the same block. Any other header ends
 * the run and comes back here, to be parsed. The most pages, word {@link RULE_MAX_COUNT}, is
 * set to the validated header's `pages_alloc` for each run. QEMU numbers packets across all
 * channels: no sequence to check.
 */
export function qemuRunRule(): Uint32Array {
  const { from, to, normalPagesAt, zeroPagesAt } = MULTIFD_PACKET_PER_PACKET_FIELDS;
  return wireRunRule({
    headerLength: MULTIFD_PACKET_HEADER_BYTES,
    offsetsAt: MULTIFD_PACKET_FIXED_BYTES,
    varyFrom: from,
    varyTo: to,
    normalAt: normalPagesAt,
    zeroAt: zeroPagesAt,
    maxCount: MULTIFD_PAGES_PER_PACKET,
    maxPackets: packetsPerRun(MULTIFD_PAGES_PER_PACKET * QEMU_PAGE_SIZE),
    layout: WireLayout.qemu,
  });
}

/**
 * The native send rule (wire_writes.ts {@link wireSendRule}) of QEMU 7.2's data packets: the
 * 1344-byte header with `packet_num`, `normal_pages`, `next_packet_size` (the pages' bytes)
 * and the offsets inside it; no zero pages listed (they go as ZERO records:
 * `zeroPagesElsewhere`), so `zero_pages` (9.0+, at 32) stays the template's 0.
 */
export function qemuSendRule(): Uint32Array {
  const { packetNumberAt, normalPagesAt, zeroPagesAt, nextPacketSizeAt } = MULTIFD_PACKET_PER_PACKET_FIELDS;
  return wireSendRule({
    headerLength: MULTIFD_PACKET_HEADER_BYTES,
    offsetsAt: MULTIFD_PACKET_FIXED_BYTES,
    numberAt: packetNumberAt,
    normalAt: normalPagesAt,
    zeroAt: zeroPagesAt,
    payloadAt: nextPacketSizeAt,
    maxCount: MULTIFD_PAGES_PER_PACKET,
  });
}

class QemuReceiveCodec implements ReceiveCodec {
  /**
   * Per block, in the order of config.qemu.ramBlocks (a packet's `block`): where its pages
   * go, and the native zero-fill of zero pages listed in packets (QEMU ≥ 9.0).
   */
  readonly #regions: RegionDescriptor[];
  readonly #zeroFill: PageScan[];
  readonly #packet: MultifdPacketReader;
  /** The header's one range, as `read` takes it (made once: this runs for every packet). */
  readonly #headerAddresses: readonly number[];
  readonly #headerLengths: readonly number[] = [MULTIFD_PACKET_HEADER_BYTES];
  readonly #offsets = new Float64Array(MULTIFD_PAGES_PER_PACKET);
  #syncs = 0;
  /** The next packet's header is in place: read ahead with the last packet's pages. */
  #headerAhead = false;
  /** The packet as the channel reads it (refilled for each). */
  readonly #wirePacket: WirePacket;
  /** QEMU closed the channel right after the last packet (its read ahead found the end). */
  #ended = false;
  /** The run of data packets read in one native call (refilled for each). */
  readonly #run: WireRun = { rule: qemuRunRule(), packets: 0, normalPages: 0, zeroPages: 0, payloadBytes: 0 };

  constructor(config: CodecConfig) {
    const blocks = config.qemu?.ramBlocks ?? [];
    this.#regions = blocks.map((block) => block.region);
    this.#zeroFill = blocks.map((block) => new PageScan(block.region, QEMU_PAGE_SIZE));
    this.#packet = new MultifdPacketReader(blocks.map((block) => ({ name: block.name, size: block.region.size })));
    this.#headerAddresses = [addressOf(this.#packet.bytes)];
    this.#wirePacket = {
      memory: this.#regions[0] ?? { address: 0, size: 0 },
      pageSize: QEMU_PAGE_SIZE,
      wire: this.#packet.bytes,
      at: MULTIFD_PACKET_FIXED_BYTES,
      count: 0,
      normalCount: 0,
      offsets: this.#offsets,
      layout: WireLayout.qemu,
      payloadBytes: 0,
      aheadLength: 0,
    };
  }

  next({ read, readWirePages, readWireRun }: PacketInput): Incoming {
    if (this.#ended) return { kind: "end" };
    if (!this.#headerAhead && !read(this.#headerAddresses, this.#headerLengths, true)) return { kind: "end" };
    this.#headerAhead = false;
    const packet = this.#packet;
    const count = packet.parseFixed();
    const { normalPages, zeroPages, block } = packet;
    const sync = (packet.flags & MULTIFD_FLAG_SYNC) !== 0;
    const wirePacket = this.#wirePacket;
    if (count > 0 && !sync) {
      // This packet and the ones after it that repeat its validated fields, each with the next
      // header read ahead with its pages, in one native call; the first other header comes back.
      wirePacket.memory = this.#regions[block];
      const run = this.#run;
      run.rule[RULE_MAX_COUNT] = packet.pagesAlloc;
      const got = readWireRun(wirePacket, run);
      // QEMU's rule rejects single offsets only (no order, no payload to check); the header
      // that broke it is in the reader's bytes, of the same block.
      if (typeof got !== "number") return packet.refuseOffset(got.reason === "offset" ? got.index : 0);
      if (got > 0) this.#headerAhead = true;
      else this.#ended = true;
      const { packets, normalPages, zeroPages, payloadBytes } = run;
      return { kind: "data", packets, normalPages, zeroPages, payloadBytes };
    }
    if (count > 0) {
      // A SYNC with pages: nothing read ahead, what follows it on this channel may wait for the barrier.
      wirePacket.memory = this.#regions[block];
      wirePacket.count = count;
      wirePacket.normalCount = normalPages;
      wirePacket.aheadLength = 0;
      const got = readWirePages(wirePacket);
      if (typeof got !== "number") return packet.refuseOffset(got.reason === "offset" ? got.index : 0);
      if (zeroPages > 0) this.#zeroFill[block].zeroFill(this.#offsets, normalPages, zeroPages);
    }
    const payloadBytes = normalPages * QEMU_PAGE_SIZE;
    if (sync) return { kind: "sync", syncNumber: this.#syncs++, normalPages, payloadBytes };
    return { kind: "data", packets: 1, normalPages: 0, zeroPages: 0, payloadBytes: 0 };
  }

  /** QEMU's destination answers nothing. */
  syncAck(): Uint8Array {
    return new Uint8Array(0);
  }

  result(): Uint8Array {
    throw new InvalidArgumentError("QEMU's format has no end-of-stream result");
  }
}

/**
 * The sending half: a round's pages (of the RAM block selected for it) as QEMU packets; SYNC as a packet with the sync flag and no pages. QEMU's destination answers
 * nothing, so there is no reply to read.
 */
class QemuSendCodec implements SendCodec {
  readonly stagingBytes = 0;
  /** 7.2's packets list no zero pages (9.0's may, but every version reads ZERO records on the main channel). */
  readonly zeroPagesElsewhere = true;
  readonly replyBytes = 0;
  readonly resultBytes = 0;
  /** Each block's region and id, the id as the bytes a packet carries. */
  readonly #blocks: { id: Uint8Array; region: RegionDescriptor }[];
  #block: { id: Uint8Array; region: RegionDescriptor };
  readonly #populate: Populate;
  /** The packet header, rewritten for every packet at a stable address (the kernel copies it). */
  readonly #header = new DataView(new ArrayBuffer(MULTIFD_PACKET_HEADER_BYTES));
  readonly #out: Outgoing = {
    headAddress: addressOf(new Uint8Array(this.#header.buffer)),
    headLength: MULTIFD_PACKET_HEADER_BYTES,
    payload: new Ranges(),
    payloadBytes: 0,
  };
  /** The native send run over the same header; its `packetNumber` numbers every packet of this channel. */
  readonly #run: SendRun = {
    rule: qemuSendRule(),
    head: new Uint8Array(this.#header.buffer),
    packetNumber: 0,
  };

  constructor(config: CodecConfig, populate: Populate) {
    const encoder = new TextEncoder();
    this.#blocks = (config.qemu?.ramBlocks ?? []).map((b) => ({ id: encoder.encode(b.name), region: b.region }));
    if (this.#blocks.length === 0) throw new InvalidArgumentError("a QEMU sending channel needs its RAM blocks");
    if (config.pagesPerPacket > MULTIFD_PAGES_PER_PACKET) {
      throw new InvalidArgumentError(`QEMU packets hold at most ${MULTIFD_PAGES_PER_PACKET} pages`);
    }
    this.#block = this.#blocks[0];
    this.#populate = populate;
  }

  selectBlock(index: number): void {
    const block = this.#blocks[index];
    if (!block) throw new InvalidArgumentError(`no RAM block ${index}`);
    this.#block = block;
  }

  data(normal: Float64Array, normalCount: number, _zero: Float64Array, zeroCount: number): Outgoing {
    if (zeroCount > 0) throw new InvalidArgumentError("QEMU 7.2's packets carry no zero pages");
    const out = this.#out;
    out.payload.clear();
    out.payloadBytes = pageRanges(this.#block.region, QEMU_PAGE_SIZE, normal, normalCount, out.payload);
    this.#populate(out.payload.addresses, out.payload.lengths, false);
    writeMultifdPacket(this.#header, this.#block.id, normal, normalCount, this.#run.packetNumber++, false);
    return out;
  }

  sendRun(): SendRun {
    // The template of the block's data packets: the run writes each one's number, counts and offsets.
    writeMultifdPacket(this.#header, this.#block.id, NO_PAGES, 0, 0, false);
    return this.#run;
  }

  control(kind: ControlKind): Outgoing {
    if (kind !== "sync") throw new InvalidArgumentError(`QEMU's format has no ${kind} packet`);
    this.#out.payload.clear();
    this.#out.payloadBytes = 0;
    writeMultifdPacket(this.#header, NO_BLOCK, NO_PAGES, 0, this.#run.packetNumber++, true);
    return this.#out;
  }

  parseSyncAck(): void {}

  parseResult(): { checksum: Uint8Array; bytes: number } {
    throw new InvalidArgumentError("QEMU's format has no end-of-stream result");
  }
}

/** QEMU's multifd channels: receiving from QEMU 7.2 to 10.0; sending 7.2's packets (10.0 reads them too). */
export const qemuFormat: WireFormat = {
  sender: (config, _region, populate) => new QemuSendCodec(config, populate),
  receiver: (config) => new QemuReceiveCodec(config),
};
