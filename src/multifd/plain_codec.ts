/**
 * The module's own wire format (docs/PROTOCOL.md, version 1), as a {@link WireFormat}:
 * a 32-byte header, the pages' offsets, then the page data raw; control packets are a
 * header alone; the receiver answers SYNC and END with 32-byte replies. Authentication
 * happens in the handshake; packets are not sealed (sealed_codec.ts seals them).
 * @module
 */
import { addressOf } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { packetsPerRun, WireLayout, type WirePacket, type WireRun, wireRunRule } from "../wire_reads.ts";
import { type SendRun, wireSendRule } from "../wire_writes.ts";
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
import { pageRanges, Ranges } from "./packet.ts";
import {
  checkSyncAck,
  CONTROL_PACKET_TYPE,
  encodeOffsets,
  encodePacketHeader,
  encodeResult,
  encodeSyncAck,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  PACKET_HEADER_FIELDS,
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
  /** The native send run over the same head; its `packetNumber` numbers every packet of this channel. */
  readonly #run: SendRun;

  constructor(config: CodecConfig, region: RegionDescriptor, populate: Populate) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    this.#populate = populate;
    this.#head = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#view = new DataView(this.#head.buffer);
    this.#out = { headAddress: addressOf(this.#head), headLength: 0, payload: new Ranges(), payloadBytes: 0 };
    this.#run = { rule: moduleSendRule(config.pagesPerPacket), head: this.#head, packetNumber: 0 };
  }

  sendRun(): SendRun {
    // The template: the run writes each packet's number, counts, payload bytes and offsets.
    encodePacketHeader(this.#view, {
      type: PacketType.DATA,
      packetNumber: 0,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
      argument: 0,
    });
    return this.#run;
  }

  data(normal: Float64Array, normalCount: number, zero: Float64Array, zeroCount: number): Outgoing {
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
    this.#header(PacketType.DATA, normalCount, zeroCount, out.payloadBytes, 0);
    return out;
  }

  control(kind: ControlKind, argument: number): Outgoing {
    this.#header(CONTROL_PACKET_TYPE[kind], 0, 0, 0, argument);
    const out = this.#out;
    out.payload.clear();
    out.payloadBytes = 0;
    out.headLength = PACKET_HEADER_BYTES;
    return out;
  }

  /** The next packet's header, with the channel's next packet number. */
  #header(type: number, normalPages: number, zeroPages: number, payloadBytes: number, argument: number): void {
    const packetNumber = this.#run.packetNumber++;
    encodePacketHeader(this.#view, { type, packetNumber, normalPages, zeroPages, payloadBytes, argument });
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
  readonly #limits: PacketLimits;
  readonly #control = new ControlPackets();
  /** Where the channel reads DATA packets: the region, and that buffer (the next header read ahead into it). */
  readonly #wirePacket: WirePacket;
  /** The run of DATA packets read in one native call (refilled for each). */
  readonly #run: WireRun;
  /** The next packet's header is in place: read ahead with the last packet's pages. */
  #headerAhead = false;

  constructor(config: CodecConfig, region: RegionDescriptor) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    const packet = new Uint8Array(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#packetAddress = addressOf(packet);
    this.#headerView = new DataView(packet.buffer, 0, PACKET_HEADER_BYTES);
    this.#limits = { expectedPacketNumber: 0, pagesPerPacket: config.pagesPerPacket, pageSize: config.pageSize };
    this.#wirePacket = {
      memory: region,
      pageSize: config.pageSize,
      wire: packet,
      at: PACKET_HEADER_BYTES,
      count: 0,
      normalCount: 0,
      offsets: new Float64Array(config.pagesPerPacket),
      layout: WireLayout.module,
      payloadBytes: 0,
      aheadLength: PACKET_HEADER_BYTES,
    };
    const maxPackets = packetsPerRun(config.pagesPerPacket * config.pageSize);
    this.#run = {
      rule: moduleRunRule(config.pagesPerPacket, maxPackets),
      packets: 0,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
    };
  }

  next({ read, readWireRun }: PacketInput): Incoming {
    if (!this.#headerAhead) read([this.#packetAddress], [PACKET_HEADER_BYTES]);
    this.#headerAhead = false;
    const header = parsePacketHeader(this.#headerView, this.#limits);
    this.#limits.expectedPacketNumber++;
    if (header.type !== PacketType.DATA) return this.#control.incoming(header);
    // This packet and the ones after it whose headers the rule accepts, each with its offsets,
    // pages and the next header, in one native call: a DATA packet is never the last (END
    // follows), and the sender waits for nothing before its next header.
    const run = this.#run;
    const got = readWireRun(this.#wirePacket, run);
    // The packets the run took, the first one counted above.
    this.#limits.expectedPacketNumber += run.packets - 1;
    if (typeof got !== "number") {
      // Packet `run.packets` of the run broke the offsets' rules; its header is in place, and
      // the rule accepted it (when it is not the first) as the parser would.
      const failed = run.packets === 0 ? header : parsePacketHeader(this.#headerView, this.#limits);
      refuseOffsets(got, this.#wirePacket.wire, PACKET_HEADER_BYTES, failed, this.#pageSize, this.#region.size);
    }
    this.#headerAhead = got === PACKET_HEADER_BYTES;
    const { packets, normalPages, zeroPages, payloadBytes } = run;
    return { kind: "data", packets, normalPages, zeroPages, payloadBytes };
  }

  syncAck(syncNumber: number): Uint8Array {
    return encodeSyncAck(syncNumber);
  }

  result(checksum: Uint8Array, bytes: number): Uint8Array {
    return encodeResult(checksum, bytes);
  }
}

/**
 * The run rule (wire_reads.ts {@link wireRunRule}) for the module's DATA packets: a following
 * header continues a run when its magic, type (DATA), flags, reserved bytes and argument are
 * the first header's — the one `parsePacketHeader` validated — its number is the one after
 * the previous header's, and its counts list 1 to `pagesPerPacket` pages; its pages must hold
 * its payload bytes (checked with its offsets, as `parseOffsets` does). Then
 * `parsePacketHeader` would accept it as the next DATA packet: every other header comes back
 * to be parsed.
 */
export function moduleRunRule(pagesPerPacket: number, maxPackets: number): Uint32Array {
  const { packetNumber, normalPages, zeroPages, payloadBytes, argument } = PACKET_HEADER_FIELDS;
  return wireRunRule({
    headerLength: PACKET_HEADER_BYTES,
    offsetsAt: PACKET_HEADER_BYTES,
    varyFrom: packetNumber,
    varyTo: argument,
    normalAt: normalPages,
    zeroAt: zeroPages,
    maxCount: pagesPerPacket,
    maxPackets,
    layout: WireLayout.module,
    payloadAt: payloadBytes,
    sequenceAt: packetNumber,
  });
}

/**
 * The native send rule (wire_writes.ts {@link wireSendRule}) of the module's DATA packets:
 * the 32-byte header with its number, counts and payload bytes, the offsets right after it.
 */
export function moduleSendRule(pagesPerPacket: number): Uint32Array {
  const { packetNumber, normalPages, zeroPages, payloadBytes } = PACKET_HEADER_FIELDS;
  return wireSendRule({
    headerLength: PACKET_HEADER_BYTES,
    offsetsAt: PACKET_HEADER_BYTES,
    numberAt: packetNumber,
    normalAt: normalPages,
    zeroAt: zeroPages,
    payloadAt: payloadBytes,
    maxCount: pagesPerPacket,
  });
}

/** The module's own format, protocol version 2. */
export const plainFormat: WireFormat = {
  sender: (config, region, populate) => new PlainSendCodec(config, region, populate),
  receiver: (config, region) => new PlainReceiveCodec(config, region),
};
