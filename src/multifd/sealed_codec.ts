/**
 * Encrypted channels (docs/PROTOCOL.md "Encrypted channels"), as a {@link WireFormat}: the
 * packets of the plain format, every byte of them sealed with an AEAD (aead.ts) under the
 * channel's key for that direction. A data packet is three records: its 32-byte header
 * (sealed: 48 bytes), its offsets, then its page data as messages of at most 64 KiB; a
 * control packet is its sealed header; the receiver's replies are sealed the same way.
 * Every record has the next nonce of its direction, so a record dropped, repeated,
 * reordered, replayed from another session or moved from another channel fails to open.
 *
 * The sender seals into a staging buffer the channel loop gives it (a ring slot, reused
 * only after the zero-copy completion that covers it); the receiver reads a packet's page
 * records into its own staging buffer and opens each straight into its place in the
 * region. A record that fails to open leaves zeros where it was to land, never its
 * unauthenticated plaintext; what an earlier record of the transfer wrote stays, and the
 * transfer ends with AuthenticationError, never verified.
 * @module
 */
import { addressOf, keepAlive } from "../../ffi/mod.ts";
import type { RegionDescriptor } from "../region.ts";
import { MessageList, SealingDirection, TAG_BYTES } from "./aead.ts";
import { CHECKSUM_BYTES } from "./checksum.ts";
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
  parseOffsets,
  parsePacketHeader,
  parseResult,
  REPLY_BYTES,
} from "./wire.ts";

const SEALED_HEADER_BYTES = PACKET_HEADER_BYTES + TAG_BYTES;
const RESULT_PLAIN_BYTES = REPLY_BYTES + CHECKSUM_BYTES;

/** Most messages one packet's page data can make: a message per run of pages, plus a split every 64 KiB. */
function maxPageMessages(config: CodecConfig): number {
  return 2 * config.pagesPerPacket + 2;
}

function keysOf(config: CodecConfig): { cipher: number; outbound: SealingDirection; inbound: SealingDirection } {
  const encryption = config.encryption;
  if (!encryption) throw new TypeError("the sealed format needs the channel's encryption keys");
  return {
    cipher: encryption.cipher,
    outbound: new SealingDirection(encryption.cipher, encryption.outboundKey),
    inbound: new SealingDirection(encryption.cipher, encryption.inboundKey),
  };
}

/** A plain buffer, its native address and a view, kept for the codec's life (no allocation per packet). */
class NativeBuffer {
  readonly bytes: Uint8Array;
  readonly address: number;
  readonly view: DataView;
  constructor(length: number) {
    this.bytes = new Uint8Array(length);
    this.address = addressOf(this.bytes);
    this.view = new DataView(this.bytes.buffer);
  }
}

class SealedSendCodec implements SendCodec {
  readonly replyBytes = REPLY_BYTES + TAG_BYTES;
  readonly resultBytes = RESULT_PLAIN_BYTES + TAG_BYTES;
  /** A data packet sealed: header, offsets and page records with their tags. */
  readonly stagingBytes: number;
  readonly #region: RegionDescriptor;
  readonly #pageSize: number;
  readonly #populate: Populate;
  readonly #outbound: SealingDirection;
  readonly #inbound: SealingDirection;
  /** Header, then offsets, in plaintext. */
  readonly #plain: NativeBuffer;
  /** A sealed control packet. */
  readonly #control = new NativeBuffer(SEALED_HEADER_BYTES);
  /** A reply opened. */
  readonly #reply = new NativeBuffer(RESULT_PLAIN_BYTES);
  readonly #messages: MessageList;
  readonly #pages = new Ranges();
  readonly #out: Outgoing = { headAddress: 0, headLength: 0, payload: new Ranges(), payloadBytes: 0 };
  #packetNumber = 0;

  constructor(config: CodecConfig, region: RegionDescriptor, populate: Populate) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    this.#populate = populate;
    ({ outbound: this.#outbound, inbound: this.#inbound } = keysOf(config));
    this.#plain = new NativeBuffer(PACKET_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES);
    this.#messages = new MessageList(maxPageMessages(config));
    this.stagingBytes = SEALED_HEADER_BYTES + config.pagesPerPacket * OFFSET_BYTES + TAG_BYTES +
      config.pagesPerPacket * config.pageSize + this.#messages.capacity * TAG_BYTES;
  }

  data(normal: Float64Array, normalCount: number, zero: Float64Array, zeroCount: number, staging: number): Outgoing {
    const plain = this.#plain;
    const at = encodeOffsets(
      plain.bytes,
      encodeOffsets(plain.bytes, PACKET_HEADER_BYTES, normal, normalCount),
      zero,
      zeroCount,
    );
    const pages = this.#pages;
    pages.clear();
    const payloadBytes = pageRanges(this.#region, this.#pageSize, normal, normalCount, pages);
    encodePacketHeader(plain.view, {
      type: PacketType.DATA,
      packetNumber: this.#packetNumber++,
      normalPages: normalCount,
      zeroPages: zeroCount,
      payloadBytes,
      argument: 0,
    });
    const messages = this.#messages;
    let sealed = staging;
    messages.clear();
    messages.push(plain.address, PACKET_HEADER_BYTES);
    sealed += this.#outbound.seal(messages, sealed);
    messages.clear();
    messages.push(plain.address + PACKET_HEADER_BYTES, at - PACKET_HEADER_BYTES);
    sealed += this.#outbound.seal(messages, sealed);
    const headLength = sealed - staging;
    if (normalCount > 0) {
      this.#populate(pages.addresses, pages.lengths, false);
      messages.clear();
      for (let i = 0; i < pages.count; i++) messages.push(pages.addresses[i], pages.lengths[i]);
      sealed += this.#outbound.seal(messages, sealed);
    }
    const out = this.#out;
    out.headAddress = staging;
    out.headLength = headLength;
    out.payload.clear();
    if (sealed > staging + headLength) out.payload.push(staging + headLength, sealed - staging - headLength);
    out.payloadBytes = payloadBytes;
    return out;
  }

  control(kind: ControlKind, argument: number): Outgoing {
    const plain = this.#plain;
    encodePacketHeader(plain.view, {
      type: CONTROL_PACKET_TYPE[kind],
      packetNumber: this.#packetNumber++,
      normalPages: 0,
      zeroPages: 0,
      payloadBytes: 0,
      argument,
    });
    const messages = this.#messages;
    messages.clear();
    messages.push(plain.address, PACKET_HEADER_BYTES);
    this.#outbound.seal(messages, this.#control.address);
    const out = this.#out;
    out.headAddress = this.#control.address;
    out.headLength = SEALED_HEADER_BYTES;
    out.payload.clear();
    out.payloadBytes = 0;
    return out;
  }

  parseSyncAck(reply: Uint8Array, syncNumber: number): void {
    checkSyncAck(this.#open(reply, REPLY_BYTES, "SYNC_ACK"), syncNumber);
  }

  parseResult(reply: Uint8Array): { checksum: Uint8Array; bytes: number } {
    return parseResult(this.#open(reply, RESULT_PLAIN_BYTES, "RESULT"), RESULT_PLAIN_BYTES);
  }

  /** Opens a sealed reply of `length` plaintext bytes into this codec's reply buffer. */
  #open(sealed: Uint8Array, length: number, what: string): Uint8Array {
    const messages = this.#messages;
    messages.clear();
    messages.push(this.#reply.address, length);
    this.#inbound.open(addressOf(sealed), messages, what);
    keepAlive(sealed); // read through its address: referenced until the call has returned
    return this.#reply.bytes.subarray(0, length);
  }
}

class SealedReceiveCodec implements ReceiveCodec {
  readonly #region: RegionDescriptor;
  readonly #pageSize: number;
  readonly #populate: Populate;
  readonly #outbound: SealingDirection;
  readonly #inbound: SealingDirection;
  /** A sealed header, then (read after it opened) sealed offsets. */
  readonly #sealed: NativeBuffer;
  /** The header and the offsets, opened. */
  readonly #plain: NativeBuffer;
  readonly #offsetBytes: Uint8Array;
  /** One packet's page records, as read (the staging of the receive side). */
  readonly #staging: NativeBuffer;
  /** A reply, plain then sealed. */
  readonly #replyPlain = new NativeBuffer(RESULT_PLAIN_BYTES);
  readonly #offsets: Float64Array;
  readonly #limits: PacketLimits;
  readonly #messages: MessageList;
  readonly #pages = new Ranges();
  readonly #scan: PageScan;
  readonly #control = new ControlPackets();

  constructor(config: CodecConfig, region: RegionDescriptor, populate: Populate) {
    this.#region = region;
    this.#pageSize = config.pageSize;
    this.#populate = populate;
    ({ outbound: this.#outbound, inbound: this.#inbound } = keysOf(config));
    const offsetBytes = config.pagesPerPacket * OFFSET_BYTES;
    this.#sealed = new NativeBuffer(Math.max(SEALED_HEADER_BYTES, offsetBytes + TAG_BYTES));
    this.#plain = new NativeBuffer(PACKET_HEADER_BYTES + offsetBytes);
    this.#offsetBytes = new Uint8Array(this.#plain.bytes.buffer, PACKET_HEADER_BYTES);
    this.#messages = new MessageList(maxPageMessages(config));
    this.#staging = new NativeBuffer(config.pagesPerPacket * config.pageSize + this.#messages.capacity * TAG_BYTES);
    this.#offsets = new Float64Array(config.pagesPerPacket);
    this.#limits = { expectedPacketNumber: 0, pagesPerPacket: config.pagesPerPacket, pageSize: config.pageSize };
    this.#scan = new PageScan(region, config.pageSize);
  }

  next({ read }: PacketInput): Incoming {
    const sealed = this.#sealed, plain = this.#plain, messages = this.#messages;
    read([sealed.address], [SEALED_HEADER_BYTES]);
    messages.clear();
    messages.push(plain.address, PACKET_HEADER_BYTES);
    this.#inbound.open(sealed.address, messages, "a packet header");
    const header = parsePacketHeader(plain.view, this.#limits);
    this.#limits.expectedPacketNumber++;
    switch (header.type) {
      case PacketType.DATA: {
        const { normalPages, zeroPages } = header;
        const offsetBytes = (normalPages + zeroPages) * OFFSET_BYTES;
        read([sealed.address], [offsetBytes + TAG_BYTES]);
        messages.clear();
        messages.push(plain.address + PACKET_HEADER_BYTES, offsetBytes);
        this.#inbound.open(sealed.address, messages, "a packet's offsets");
        parseOffsets(this.#offsetBytes, header, this.#region.size, this.#pageSize, this.#offsets);
        if (normalPages > 0) {
          const pages = this.#pages;
          pages.clear();
          pageRanges(this.#region, this.#pageSize, this.#offsets, normalPages, pages);
          messages.clear();
          for (let i = 0; i < pages.count; i++) messages.push(pages.addresses[i], pages.lengths[i]);
          read([this.#staging.address], [messages.sealedBytes]);
          this.#populate(pages.addresses, pages.lengths, true);
          this.#inbound.open(this.#staging.address, messages, "page data");
        }
        if (zeroPages > 0) this.#scan.zeroFill(this.#offsets, normalPages, zeroPages);
        return { kind: "data", packets: 1, normalPages, zeroPages, payloadBytes: header.payloadBytes };
      }
      default:
        return this.#control.incoming(header);
    }
  }

  syncAck(syncNumber: number): Uint8Array {
    return this.#seal(encodeSyncAck(syncNumber));
  }

  /** RESULT: the reply and the region checksum, sealed as one message. */
  result(checksum: Uint8Array, bytes: number): Uint8Array {
    return this.#seal(encodeResult(checksum, bytes));
  }

  #seal(plain: Uint8Array): Uint8Array {
    this.#replyPlain.bytes.set(plain);
    const messages = this.#messages;
    messages.clear();
    messages.push(this.#replyPlain.address, plain.length);
    const out = new Uint8Array(plain.length + TAG_BYTES);
    this.#outbound.seal(messages, addressOf(out));
    return out;
  }
}

/** Encrypted channels, protocol version 2 (the cipher and keys come with each channel's config). */
export const sealedFormat: WireFormat = {
  sender: (config, region, populate) => new SealedSendCodec(config, region, populate),
  receiver: (config, region, populate) => new SealedReceiveCodec(config, region, populate),
};
