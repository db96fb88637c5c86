/**
 * @internal Data packets received straight into memory, each in one native call on a
 * channel's socket (zig/transfer.zig `zc_recv_wire_pages`, `zc_recv_wire_run`): a receiving
 * codec's hot path. The codec keeps one {@link WirePacket} (and one {@link WireRun}) and
 * refills what changes from packet to packet: nothing is allocated per packet.
 *
 * The calls are reads of the channel ({@link SocketChannel.nativeReadSync}): one at a time
 * per channel, counted in its stats, their timeouts and errors the channel's own.
 * @module
 */
import { Errno, native } from "../ffi/mod.ts";
import { ChannelClosedError, InvalidArgumentError } from "./errors.ts";
import { FullResult, type SocketChannel } from "./socket_channel.ts";

/**
 * @internal How {@link readWirePagesSync} finds and checks a packet's offsets
 * (zig/transfer.zig `Layout`).
 */
export const WireLayout = {
  /**
   * QEMU's multifd packets: the offsets are in the header, read before; each must be a
   * whole page inside the memory, in any order.
   */
  qemu: 0,
  /**
   * The module's packets (docs/PROTOCOL.md): the offsets follow the header in the socket;
   * each list (data pages, then zero pages) ascending, no page in both, a short last page
   * allowed, and the pages with data hold exactly the header's payload bytes.
   */
  module: 3,
} as const;
/** @internal A {@link WireLayout} value. */
export type WireLayout = typeof WireLayout[keyof typeof WireLayout];

/** @internal A data packet as {@link readWirePagesSync} and {@link readWireRunSync} read it. */
export interface WirePacket {
  /**
   * Where its pages go (the region, or the RAM block the packet names); `sparseFd`: a sparse
   * file's, whose holes its zero pages are left in (RegionDescriptor.sparseFd).
   */
  memory: { readonly address: number; readonly size: number; readonly sparseFd?: number };
  pageSize: number;
  /** The header and its offsets (at `at`); the next header is read ahead into it from byte 0. */
  wire: Uint8Array;
  at: number;
  /** Its offsets, the first `normalCount` of them pages with data (the rest: zero pages, the codec's). */
  count: number;
  normalCount: number;
  /** Where the decoded offsets go. */
  offsets: Float64Array;
  layout: WireLayout;
  /** What the pages with data must hold ({@link WireLayout.module}; unchecked for QEMU's). */
  payloadBytes: number;
  /** Bytes of the next packet to read with this one (0: none). */
  aheadLength: number;
}

/**
 * @internal A run of data packets as {@link readWireRunSync} reads them in one native call:
 * the rule by which a packet's header continues the run ({@link wireRunRule}), and what the
 * last call got.
 */
export interface WireRun {
  readonly rule: Uint32Array;
  /** Packets whose pages all arrived in the last call, their pages with data and their zero pages (zero-filled). */
  packets: number;
  normalPages: number;
  zeroPages: number;
  /** The bytes those packets' pages with data hold. */
  payloadBytes: number;
}

/**
 * @internal The fields of a run's rule (zig/transfer.zig `RunRule`; byte positions in a
 * header): a header is `headerLength` bytes, its offsets at `offsetsAt` (in the header, or
 * right after it in the socket: `layout`), checked by the layout's rules; a following header
 * continues the run when every byte before `offsetsAt` outside [`varyFrom`, `varyTo`) is the
 * first header's, its counts of pages with data (u32 at `normalAt`) and of zero pages (at
 * `zeroAt`) list 1 to `maxCount` pages, and its sequence number (u64 at `sequenceAt`, if the
 * format has one) is the previous header's plus one. With {@link WireLayout.module} the
 * pages with data must hold the u32 at `payloadAt`. At most `maxPackets` a call.
 */
export interface WireRunRule {
  headerLength: number;
  offsetsAt: number;
  varyFrom: number;
  varyTo: number;
  normalAt: number;
  zeroAt: number;
  maxCount: number;
  maxPackets: number;
  layout: WireLayout;
  payloadAt?: number;
  sequenceAt?: number;
}

/** A rule word for a field the format does not have. */
const NO_FIELD = 0xffff_ffff;

/** @internal The words of a {@link WireRunRule}, in zig/transfer.zig `RunRule`'s order. */
export function wireRunRule(rule: WireRunRule): Uint32Array {
  return Uint32Array.of(
    rule.headerLength,
    rule.offsetsAt,
    rule.varyFrom,
    rule.varyTo,
    rule.normalAt,
    rule.zeroAt,
    rule.maxCount,
    rule.maxPackets,
    rule.layout,
    rule.payloadAt ?? NO_FIELD,
    rule.sequenceAt ?? NO_FIELD,
  );
}

/** @internal The words of a {@link WireRun}'s rule. */
export const WIRE_RUN_RULE_WORDS = 11;
/** @internal The word of a run's rule that holds its `maxCount` (a codec may set it per run). */
export const RULE_MAX_COUNT = 6;
/** The word of a run's rule that holds its `layout`. */
const RULE_LAYOUT = 8;

/**
 * The page data one run call receives at most: between calls the channel updates its
 * counters (a progress bar's bytes) and checks for an abort.
 */
const RUN_BYTES = 32 * 2 ** 20;

/** @internal Packets a run call receives at most, for packets of up to `packetBytes` of page data. */
export function packetsPerRun(packetBytes: number): number {
  return Math.max(1, Math.floor(RUN_BYTES / packetBytes));
}

/**
 * @internal What broke a packet's offset rules: offset `index` itself, data page `index`
 * listed as a zero page too, or pages that do not hold the header's payload bytes.
 */
export type WirePagesRejection =
  | { reason: "offset"; index: number }
  | { reason: "bothLists"; index: number }
  | { reason: "payload"; pagesHold: number };

/**
 * What the last zc_recv_wire_pages wrote: bytes received, bytes its pages hold, bytes read
 * ahead, the offsets' decode result, offset bytes received. One per thread (module state):
 * the calls are synchronous.
 */
const pagesOutcome = new Float64Array(5);
/** What the last zc_recv_wire_run wrote (its outcome, zig/transfer.zig). */
const runOutcome = new Float64Array(9);

/**
 * @internal One data packet of a format whose packets list their pages' offsets (big-endian
 * u64) before the pages' data, in one native call (zc_recv_wire_pages): with
 * {@link WireLayout.module} the packet's `count` offsets are received into `wire` at `at`
 * first (with {@link WireLayout.qemu} they are there already, in a header read before),
 * then decoded into `offsets` and checked by the layout's rules; the data of the first
 * `normalCount` pages is read straight into its places in `memory` (pages that follow each
 * other as one iovec; a file region's pages faulted in first with `populate`, best effort),
 * then the next packet's first `aheadLength` bytes into `wire` itself, from byte 0 (0:
 * none). One crossing per packet where three or four were: each pays most from the cold
 * caches a packet's copy leaves. Returns the bytes read ahead (`aheadLength`, or 0 when the
 * peer ended the stream between the packets), or what broke the layout's rules (nothing
 * more read). The peer ending the stream anywhere else throws ChannelClosedError; other
 * errors as the channel's `readFullSync`.
 */
export function readWirePagesSync(
  channel: SocketChannel,
  packet: WirePacket,
  populate: boolean,
): number | WirePagesRejection {
  const { memory, wire, at, count, normalCount, offsets, layout, aheadLength } = packet;
  if (
    !(normalCount <= count && count <= offsets.length && at + 8 * count <= wire.length && aheadLength <= wire.length)
  ) {
    throw new InvalidArgumentError(
      `readWirePagesSync: ${count} offsets at byte ${at} (${normalCount} with data, room for ${offsets.length}), ` +
        `${aheadLength} bytes ahead, in ${wire.length} bytes`,
    );
  }
  return channel.nativeReadSync("readWirePagesSync", (fd, ioTimeoutMs) => {
    const outcome = pagesOutcome;
    const rc = native.zc_recv_wire_pages(
      fd,
      memory.address,
      memory.size,
      packet.pageSize,
      wire,
      at,
      count,
      normalCount,
      offsets,
      layout,
      packet.payloadBytes,
      populate ? 1 : 0,
      ioTimeoutMs,
      aheadLength,
      outcome,
    );
    const offsetBytes = outcome[4];
    if (rc === FullResult.invalidOffset || rc === FullResult.payloadMismatch) {
      channel.countRead(rc, offsetBytes, offsetBytes);
    }
    if (rc === FullResult.invalidOffset) {
      const decoded = outcome[3];
      return decoded < 0 ? { reason: "bothLists", index: -1 - decoded } : { reason: "offset", index: decoded };
    }
    if (rc === FullResult.payloadMismatch) return { reason: "payload", pagesHold: outcome[1] };
    if (rc === -Errno.EINVAL && outcome[0] === 0 && outcome[1] === 0 && offsetBytes === 0) {
      throw new InvalidArgumentError("readWirePagesSync: a memory size, page size or payload that is not whole");
    }
    // A timeout or an error counts what its step was missing: the offsets, the pages or the next header.
    const received = outcome[0], asked = outcome[1], ahead = outcome[2];
    const offsetsDone = layout === WireLayout.qemu || offsetBytes === 8 * count;
    const pagesDone = offsetsDone && received === asked;
    if (!offsetsDone) channel.countRead(rc, offsetBytes, 8 * count);
    else if (!pagesDone) channel.countRead(rc, offsetBytes + received, offsetBytes + asked);
    else channel.countRead(rc, offsetBytes + received + ahead, offsetBytes + asked + aheadLength);
    if (!pagesDone || (ahead > 0 && ahead < aheadLength)) {
      throw new ChannelClosedError("the peer closed the connection in the middle of a packet");
    }
    return ahead;
  });
}

/**
 * @internal A run of data packets in one native call (zc_recv_wire_run): the first header is
 * in `packet.wire`, validated by the caller; each packet's offsets are received (when they
 * follow the header in the socket: {@link WireLayout.module}), decoded and checked by the
 * rule's layout, its pages with data read into `memory` (faulted in first with `populate`),
 * its zero pages zero-filled, and the next header read into `wire`, for as long as that
 * header continues the run by `run.rule` (every byte the caller validated unchanged, its
 * counts within the limit, its sequence number the next), at most the rule's packet count.
 * `run` gets the packets received and their pages. Returns the bytes of the header read
 * after the last packet — one the caller must parse — or 0 when the peer ended the stream
 * between packets, or what broke the layout's rules in packet `run.packets` of the call
 * (its header then in `wire`; nothing more read). The peer ending the stream anywhere else
 * throws ChannelClosedError; other errors as the channel's `readFullSync`.
 */
export function readWireRunSync(
  channel: SocketChannel,
  packet: WirePacket,
  run: WireRun,
  populate: boolean,
): number | WirePagesRejection {
  const { memory, wire, offsets } = packet;
  const rule = run.rule;
  const headerBytes = rule[0], offsetsAt = rule[1], maxCount = rule[RULE_MAX_COUNT], layout = rule[RULE_LAYOUT];
  const wireBytes = layout === WireLayout.module ? offsetsAt + 8 * maxCount : headerBytes;
  if (rule.length !== WIRE_RUN_RULE_WORDS || wire.length < wireBytes || offsets.length < maxCount) {
    throw new InvalidArgumentError(
      `readWireRunSync: a rule of ${rule.length} words for ${headerBytes}-byte headers of up to ${maxCount} ` +
        `pages, with ${wire.length} bytes of wire and room for ${offsets.length} offsets`,
    );
  }
  return channel.nativeReadSync("readWireRunSync", (fd, ioTimeoutMs) => {
    const outcome = runOutcome;
    const rc = native.zc_recv_wire_run(
      fd,
      memory.address,
      memory.size,
      packet.pageSize,
      wire,
      rule,
      offsets,
      populate ? 1 : 0,
      memory.sparseFd ?? -1,
      ioTimeoutMs,
      outcome,
    );
    // Indexed, not destructured: no iterator per call.
    const received = outcome[0], asked = outcome[1], ahead = outcome[2], bytes = outcome[4];
    run.packets = outcome[5];
    run.normalPages = outcome[6];
    run.zeroPages = outcome[7];
    run.payloadBytes = outcome[8];
    if (rc === FullResult.invalidOffset || rc === FullResult.payloadMismatch) {
      channel.countRead(rc, bytes, bytes);
      if (rc === FullResult.payloadMismatch) return { reason: "payload", pagesHold: asked };
      const decoded = outcome[3];
      return decoded < 0 ? { reason: "bothLists", index: -1 - decoded } : { reason: "offset", index: decoded };
    }
    if (rc === -Errno.EINVAL && bytes === 0 && run.packets === 0 && asked === 0) {
      throw new InvalidArgumentError(
        "readWireRunSync: a memory size, page size, rule or first header that is not valid",
      );
    }
    // A timeout or an error counts what its step was missing: the offsets, the pages, or the next header.
    const packetDone = received === asked;
    channel.countRead(rc, bytes, bytes + (packetDone ? headerBytes - ahead : asked - received));
    if (!packetDone || (ahead > 0 && ahead < headerBytes)) {
      throw new ChannelClosedError("the peer closed the connection in the middle of a packet");
    }
    return ahead;
  });
}
