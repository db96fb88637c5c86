/**
 * The seam between a multifd channel and the wire format it speaks (in the spirit of
 * QEMU's per-method multifd hooks): a codec turns a packet's pages into the bytes to
 * send, and received bytes back into pages in their place in the region. Everything
 * else — the socket, rounds, the shared packet cursor, SYNC and the barrier, zero-copy
 * flushes, counters, the checksum, abort and teardown — is the channel loop's
 * (channel_worker.ts), written once for every format. A format is one file that
 * implements {@link WireFormat}; plain_codec.ts is the first.
 * @module
 */
import type { RegionDescriptor } from "../region.ts";
import type { Ranges } from "./packet.ts";

/** What a channel's codec is made for. */
export interface CodecConfig {
  channelId: number;
  pageSize: number;
  pagesPerPacket: number;
}

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
   * A data packet of pages whose region offsets are `normal[0..normalCount)` (data) and
   * `zero[0..zeroCount)` (all-zero pages, sent as offsets only), each list ascending.
   */
  data(normal: Float64Array, normalCount: number, zero: Float64Array, zeroCount: number): Outgoing;
  /** A control packet: SYNC (argument: the sync's number), END, VERDICT (1: checksums matched). */
  control(kind: ControlKind, argument: number): Outgoing;
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
 * Reads exactly the given native ranges from the channel's socket (throws on EOF or
 * error). `pages`: the ranges are region pages (the loop may populate them first), not a
 * codec's own buffer.
 */
export type ReadRanges = (addresses: readonly number[], lengths: readonly number[], pages?: boolean) => void;

/** What the receiving half found in one packet. */
export type Incoming =
  | { kind: "data"; normalPages: number; zeroPages: number; payloadBytes: number }
  | { kind: "sync"; syncNumber: number }
  | { kind: "end" }
  | { kind: "verdict"; matched: boolean };

/** The receiving half of a wire format, one per channel. */
export interface ReceiveCodec {
  /**
   * Reads the next packet with `read`, validates every field against the session, and
   * lands a data packet's pages in the region — only inside it, only at validated offsets.
   */
  next(read: ReadRanges): Incoming;
  /** The reply acknowledging SYNC `syncNumber`. */
  syncAck(syncNumber: number): Uint8Array;
  /** The reply carrying this side's region checksum (CHECKSUM_BYTES) and the payload bytes it received. */
  result(checksum: Uint8Array, bytes: number): Uint8Array;
}

/** A wire format: makes the two halves of a channel. */
export interface WireFormat {
  sender(config: CodecConfig, region: RegionDescriptor): SendCodec;
  receiver(config: CodecConfig, region: RegionDescriptor): ReceiveCodec;
}
