/**
 * The seam between a multifd channel and the wire format it speaks (in the spirit of
 * QEMU's per-method multifd hooks): a codec turns a packet's pages into the bytes to
 * send, and received bytes back into pages in their place in the region. Everything
 * else — the socket, rounds, the shared packet cursor, SYNC and the barrier, zero-copy
 * flushes, counters, the checksum, abort and teardown — is the channel loop's
 * (channel_worker.ts), written once for every format. A format is one file that
 * implements {@link WireFormat}: plain_codec.ts (the module's own packets) and
 * sealed_codec.ts (the same packets, encrypted).
 * @module
 */
import type { RegionDescriptor } from "../region.ts";
import type { WirePacket, WirePagesRejection, WireRun } from "../wire_reads.ts";
import type { SendRun } from "../wire_writes.ts";
import type { Ranges } from "./packet.ts";
import { type PacketHeader, PacketType, ProtocolError } from "./wire.ts";

/** What a channel's codec is made for. */
export interface CodecConfig {
  channelId: number;
  pageSize: number;
  pagesPerPacket: number;
  /** Encrypted channels only: the cipher (aead.ts CIPHER_IDS) and this end's traffic keys (auth.ts). */
  encryption?: ChannelEncryption;
  /** QEMU's multifd format (src/qemu/): the RAM blocks its packets name, each a region. */
  qemu?: { ramBlocks: { name: string; region: RegionDescriptor }[] };
}

/** An encrypted channel's cipher and keys, as seen from one end. */
export interface ChannelEncryption {
  cipher: number;
  /** Seals what this end sends. */
  outboundKey: Uint8Array;
  /** Opens what this end receives. */
  inboundKey: Uint8Array;
}

/**
 * Faults region pages in before a codec reads (`forWrite` false) or writes them itself
 * (file regions; a no-op otherwise), so that the copy does not take the faults one by one.
 */
export type Populate = (addresses: readonly number[], lengths: readonly number[], forWrite: boolean) => void;

/** Bytes to send for one packet: a head the kernel copies, then the payload (zero-copy when enabled). */
export interface Outgoing {
  /** Address and length of the head (header, offsets): a buffer the codec keeps at a stable address. */
  headAddress: number;
  headLength: number;
  /** Page data ranges, in order; empty for control packets. */
  payload: Ranges;
  /** Payload bytes (what the counters call bytes sent). */
  payloadBytes: number;
}

/** Control packets every format has a way to say. */
export type ControlKind = "sync" | "end" | "verdict";

/** The sending half of a wire format, one per channel. */
export interface SendCodec {
  /**
   * Bytes of staging a data packet needs (0: the packet is sent from the region itself).
   * The channel loop owns the staging and passes a slot to {@link data}; with zero-copy it
   * reuses a slot only after the kernel's completion for the sends made from it.
   */
  readonly stagingBytes: number;
  /**
   * A data packet of pages whose region offsets are `normal[0..normalCount)` (data) and
   * `zero[0..zeroCount)` (all-zero pages, sent as offsets only), each list ascending;
   * `staging`: the native address of a free slot of {@link stagingBytes} bytes.
   */
  data(normal: Float64Array, normalCount: number, zero: Float64Array, zeroCount: number, staging: number): Outgoing;
  /** A control packet: SYNC (argument: the sync's number), END, VERDICT (1: checksums matched). */
  control(kind: ControlKind, argument: number): Outgoing;
  /** A format whose packets name one of several memory blocks (QEMU's): the next round's pages are in block `index`. */
  selectBlock?(index: number): void;
  /**
   * True for a format whose packets carry no all-zero pages (QEMU 7.2's): the channel loop
   * hands them to the main thread instead ("zeroPages" messages, offsets in the
   * round's block), which sends them its own way (QEMU: ZERO records on the main channel),
   * and {@link data} gets no zero pages.
   */
  readonly zeroPagesElsewhere?: boolean;
  /**
   * A format whose data packets are a header template with fields at fixed places (the
   * module's, QEMU's): writes the template of the next data packets into the run's head (for
   * the block selected) and returns the run, by which the channel loop sends a round's
   * packets in one native call when they go with a copying send (wire_writes.ts
   * sendWireRunSync); packets it sends so are numbered from the run's `packetNumber`, as
   * {@link data}'s would be. Absent: every packet goes through {@link data}.
   */
  sendRun?(): SendRun;
  /** Size of the receiver's SYNC acknowledgement. */
  readonly replyBytes: number;
  /** Size of the receiver's result. */
  readonly resultBytes: number;
  /** Checks a reply acknowledging SYNC `syncNumber`. */
  parseSyncAck(reply: Uint8Array, syncNumber: number): void;
  /** Reads the receiver's result: its region checksum (CHECKSUM_BYTES) and the payload bytes it received. */
  parseResult(reply: Uint8Array): { checksum: Uint8Array; bytes: number };
}

/**
 * Reads exactly the given native ranges from the channel's socket (throws on error, and on
 * EOF: except, with `endAllowed`, an EOF before the first byte, which returns false: a format
 * whose peer ends a channel by closing it, as QEMU's).
 */
export type ReadRanges = (addresses: readonly number[], lengths: readonly number[], endAllowed?: boolean) => boolean;

/**
 * Reads a data packet that lists its pages' offsets before their data (QEMU's, the
 * module's), and the next packet's header with it, in one native call; returns the bytes read
 * ahead (0: the peer ended the stream between the packets) or what broke the format's rules
 * (nothing more read). The peer ending the stream anywhere else is an error.
 * wire_reads.ts readWirePagesSync.
 */
export type ReadWirePages = (packet: WirePacket) => number | WirePagesRejection;

/**
 * Reads a run of data packets in one native call — the first one's header validated
 * already, each following one's header continuing it by the run's rule (one the format
 * makes: wire_reads.ts wireRunRule) — and the header after them; returns as
 * {@link ReadWirePages}. wire_reads.ts readWireRunSync.
 */
export type ReadWireRun = (packet: WirePacket, run: WireRun) => number | WirePagesRejection;

/** How a receiving codec reads a packet from its channel. */
export interface PacketInput {
  read: ReadRanges;
  readWirePages: ReadWirePages;
  readWireRun: ReadWireRun;
}

/** What the receiving half found in one packet, or in a run of data packets (`packets`). */
export type Incoming =
  | { kind: "data"; packets: number; normalPages: number; zeroPages: number; payloadBytes: number }
  /** A SYNC (in QEMU's format a packet may carry pages and the sync flag: then counted here). */
  | { kind: "sync"; syncNumber: number; normalPages?: number; payloadBytes?: number }
  | { kind: "end" }
  | { kind: "verdict"; matched: boolean };

/**
 * What a receiving channel makes of the control packets of the module's packet format
 * (plain or sealed, the same headers): SYNC numbers must run 0, 1, 2, … on each channel.
 */
export class ControlPackets {
  #syncNumber = 0;

  /** The meaning of a validated header that is not DATA. */
  incoming(header: PacketHeader): Incoming {
    switch (header.type) {
      case PacketType.SYNC:
        if (header.argument !== this.#syncNumber) {
          throw new ProtocolError("packet.argument", `SYNC ${header.argument}, expected ${this.#syncNumber}`);
        }
        this.#syncNumber++;
        return { kind: "sync", syncNumber: header.argument };
      case PacketType.END:
        return { kind: "end" };
      default:
        return { kind: "verdict", matched: header.argument === 1 };
    }
  }
}

/** The receiving half of a wire format, one per channel. */
export interface ReceiveCodec {
  /**
   * Reads the next packet from `input`, validates every field against the session, and
   * lands a data packet's pages in the region — only inside it, only at validated offsets.
   */
  next(input: PacketInput): Incoming;
  /** The reply acknowledging SYNC `syncNumber` (empty: the format sends none). */
  syncAck(syncNumber: number): Uint8Array;
  /** The reply carrying this side's region checksum (CHECKSUM_BYTES) and the payload bytes it received. */
  result(checksum: Uint8Array, bytes: number): Uint8Array;
}

/** A wire format: makes the two halves of a channel. */
export interface WireFormat {
  sender(config: CodecConfig, region: RegionDescriptor, populate: Populate): SendCodec;
  receiver(config: CodecConfig, region: RegionDescriptor, populate: Populate): ReceiveCodec;
}
