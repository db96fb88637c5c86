/**
 * The module's own wire format (docs/PROTOCOL.md, version 1), as a {@link WireFormat}:
 * a 32-byte header, the pages' offsets, then the page data raw; control packets are a
 * header alone; the receiver answers SYNC and END with 32-byte replies. Authentication
 * happens in the handshake; packets are not sealed (sealed_codec.ts seals them).
 * @module
 */
import { addressOf } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { WireLayout, type WirePacket } from "../wire_reads.ts";
import {
  type CodecConfig,
  type ControlKind,
  ControlPackets,
  type Incoming,
  type Outgoing,
  type PacketInput,
  type Populate,
  type ReceiveCodec,
  type SendCodec,
  type WireFormat,
} from "./codec.ts";
import { CHECKSUM_BYTES } from "./checksum.ts";
import { pageRanges, PageScan, Ranges } from "./packet.ts";
import {
  checkSyncAck,
  CONTROL_PACKET_TYPE,
  encodeOffsets,
  encodePacketHeader,
  encodeResult,
  encodeSyncAck,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  type PacketLimits,
  PacketType,
  parsePacketHeader,
  parseResult,
  refuseOffsets,
  REPLY_BYTES,
} from "./wire.ts";

class PlainSendCodec implements SendCodec {
  readonly stagingBytes = 0;
  readonly replyBytes = REPLY_BYTES;
  readonly resultBytes = REPLY_BYTES + CHECKSUM_BYTES;
  readonly #region: RegionDescriptor;
  readonly #pageSize: number;
  readonly #populate: Populate;
  /** Header plus the largest offset list: one reusable buffer at a stable address. */
  readonly #head: Uint8Array;
  readonly #view: DataView;
  /** One packet's description, refilled for every packet (no allocation per packet). */
  readonly #out: Outgoing;
  #packetNumber = 0;

  constructor(config: CodecConfig, region: RegionDescriptor, populate: Populate) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    this.#populate = populate;
    this.#head = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#view = new DataView(this.#head.buffer);
    this.#out = { headAddress: addressOf(this.#head), headLength: 0, payload: new Ranges(), payloadBytes: 0 };
  }

  data(normal: Float64Array, normalCount: number, zero: Float64Array, zeroCount: number): Outgoing {
    const view = this.#view;
    const at = encodeOffsets(
      this.#head,
      encodeOffsets(this.#head, PACKET_HEADER_BYTES, normal, normalCount),
      zero,
      zeroCount,
    );
    const out = this.#out;
    out.payload.clear();
    out.payloadBytes = pageRanges(this.#region, this.#pageSize, normal, normalCount, out.payload);
    this.#populate(out.payload.addresses, out.payload.lengths, false);
    out.headLength = at;
    encodePacketHeader(view, {
      type: PacketType.DATA,
      packetNumber: this.#packetNumber++,
      normalPages: normalCount,
      zeroPages: zeroCount,
      payloadBytes: out.payloadBytes,
      argument: 0,
    });
    return out;
  }

  control(kind: ControlKind, argument: number): Outgoing {
    encodePacketHeader(this.#view, {
      type: CONTROL_PACKET_TYPE[kind],
      packetNumber: this.#packetNumber++,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
      argument,
    });
    const out = this.#out;
    out.payload.clear();
    out.payloadBytes = 0;
    out.headLength = PACKET_HEADER_BYTES;
    return out;
  }

  parseSyncAck(reply: Uint8Array, syncNumber: number): void {
    checkSyncAck(reply, syncNumber);
  }

  parseResult(reply: Uint8Array): { checksum: Uint8Array; bytes: number } {
    return parseResult(reply, this.resultBytes);
  }
}

class PlainReceiveCodec implements ReceiveCodec {
  readonly #region: RegionDescriptor;
  readonly #pageSize: number;
  /** Header, then the offsets: one buffer whose address is taken once (not per read). */
  readonly #packetAddress: number;
  readonly #headerView: DataView;
  readonly #offsets: Float64Array;
  readonly #limits: PacketLimits;
  readonly #scan: PageScan;
  readonly #control = new ControlPackets();
  /** A DATA packet as the channel reads it (its offsets into that buffer, then the next header): refilled for each. */
  readonly #wirePacket: WirePacket;
  /** The next packet's header is in place: read ahead with the last packet's pages. */
  #headerAhead = false;

  constructor(config: CodecConfig, region: RegionDescriptor) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    const packet = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#packetAddress = addressOf(packet);
    this.#headerView = new DataView(packet.buffer, 0, PACKET_HEADER_BYTES);
    this.#offsets = new Float64Array(config.pagesPerPacket);
    this.#limits = { expectedPacketNumber: 0, pagesPerPacket: config.pagesPerPacket, pageSize: config.pageSize };
    this.#scan = new PageScan(region, config.pageSize);
    this.#wirePacket = {
      memory: region,
      pageSize: config.pageSize,
      wire: packet,
      at: PACKET_HEADER_BYTES,
      count: 0,
      normalCount: 0,
      offsets: this.#offsets,
      layout: WireLayout.module,
      payloadBytes: 0,
      aheadLength: PACKET_HEADER_BYTES,
    };
  }

  next({ read, readWirePages }: PacketInput): Incoming {
    if (!this.#headerAhead) read([this.#packetAddress], [PACKET_HEADER_BYTES]);
    this.#headerAhead = false;
    const header = parsePacketHeader(this.#headerView, this.#limits);
    this.#limits.expectedPacketNumber++;
    switch (header.type) {
      case PacketType.DATA: {
        const { normalPages, zeroPages } = header;
        // The offsets, the pages and the next header as one native call: a DATA packet is never
        // the last (END follows), and the sender waits for nothing before its next header.
        const wirePacket = this.#wirePacket;
        wirePacket.count = normalPages + zeroPages;
        wirePacket.normalCount = normalPages;
        wirePacket.payloadBytes = header.payloadBytes;
        const got = readWirePages(wirePacket);
        if (typeof got !== "number") {
          refuseOffsets(got, wirePacket.wire, PACKET_HEADER_BYTES, header, this.#pageSize, this.#region.size);
        }
        this.#headerAhead = got === PACKET_HEADER_BYTES;
        if (zeroPages > 0) this.#scan.zeroFill(this.#offsets, normalPages, zeroPages);
        return { kind: "data", packets: 1, normalPages, zeroPages, payloadBytes: header.payloadBytes };
      }
      default:
        return this.#control.incoming(header);
    }
  }

  syncAck(syncNumber: number): Uint8Array {
    return encodeSyncAck(syncNumber);
  }

  result(checksum: Uint8Array, bytes: number): Uint8Array {
    return encodeResult(checksum, bytes);
  }
}

/** The module's own format, protocol version 2. */
export const plainFormat: WireFormat = {
  sender: (config, region, populate) => new PlainSendCodec(config, region, populate),
  receiver: (config, region) => new PlainReceiveCodec(config, region),
};
