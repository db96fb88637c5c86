/**
 * @internal A round's data packets sent in one native call on a channel's socket
 * (zig/transfer.zig `zc_send_run`): a sending codec's hot path when its packets are a
 * header template with fields at fixed places, and the pages go with a copying send. The
 * counterpart of wire_reads.ts: the call is a write of the channel
 * ({@link SocketChannel.nativeWriteSync}), counted in its stats, its timeouts and errors the
 * channel's own.
 * @module
 */
import { Errno, native } from "../ffi/mod.ts";
import { InvalidArgumentError } from "./errors.ts";
import { FullResult, type SocketChannel } from "./socket_channel.ts";

/**
 * @internal Where a format's data packet header takes its fields (zig/transfer.zig
 * `SendRule`; byte positions in the header template): the template is `headerLength` bytes;
 * a packet's offsets (big-endian u64: its pages with data, then the zero pages it lists) go
 * at `offsetsAt`, inside the header or, when that is `headerLength`, right after it; its
 * number (u64, one more each packet) at `numberAt`; its counts of pages with data and of
 * zero pages (u32) at `normalAt` and `zeroAt`; the bytes its pages with data hold (u32) at
 * `payloadAt`. At most `maxCount` pages a packet.
 */
export interface WireSendRule {
  headerLength: number;
  offsetsAt: number;
  numberAt: number;
  normalAt: number;
  zeroAt: number;
  payloadAt: number;
  maxCount: number;
}

/** @internal The words of a {@link WireSendRule}, in zig/transfer.zig `SendRule`'s order. */
export function wireSendRule(rule: WireSendRule): Uint32Array {
  const { headerLength, offsetsAt, numberAt, normalAt, zeroAt, payloadAt, maxCount } = rule;
  return Uint32Array.of(headerLength, offsetsAt, numberAt, normalAt, zeroAt, payloadAt, maxCount);
}

/**
 * @internal A format's native send run: its rule's words, the header template (the format
 * writes it before each run: its fixed fields, for the current RAM block), and the number
 * its next packet gets, which the run advances.
 */
export interface SendRun {
  readonly rule: Uint32Array;
  readonly head: Uint8Array;
  packetNumber: number;
}

/** @internal Where a run's zero pages go: not looked for, listed in the packets, or to the caller's list. */
export const RunZeroPages = { notScanned: 0, inPacket: 1, toCaller: 2 } as const;
/** @internal A {@link RunZeroPages} value. */
export type RunZeroPages = typeof RunZeroPages[keyof typeof RunZeroPages];

/** @internal A round as {@link sendWireRunSync} sends it: its pages, claimed through the shared cursor. */
export interface RunRound {
  /** `sparseFd`: a sparse file's, whose holes are zero pages without being read (RegionDescriptor.sparseFd). */
  memory: { readonly address: number; readonly size: number; readonly sparseFd?: number };
  pageSize: number;
  /** The round's page indices (null: the memory's pages in order). */
  pages: Uint32Array | null;
  pageCount: number;
  perPacket: number;
  /** The shared state's control words, and which of them are the packet cursor and the abort flag. */
  control: Int32Array;
  cursorAt: number;
  abortAt: number;
}

/** @internal What one {@link sendWireRunSync} call sent; `zeroCount`: offsets now in the zero list. */
export interface RunSent {
  /** The round's packets are all claimed (false: stopped by an abort, or the zero list is full). */
  done: boolean;
  packets: number;
  normalPages: number;
  zeroPages: number;
  payloadBytes: number;
  zeroCount: number;
}

/** Stands in for a round's page list when it has none (the memory's pages in order). */
const NO_PAGES = new Uint32Array(1);
/** zc_send_run's io words (zig/transfer.zig); one per thread: the calls are synchronous. */
const io = new Float64Array(8);
const sent: RunSent = { done: false, packets: 0, normalPages: 0, zeroPages: 0, payloadBytes: 0, zeroCount: 0 };

/**
 * @internal Sends packets of `round` in one native call (zc_send_run): claims packet after
 * packet from the round's cursor (shared with the round's other channels), writes each into
 * `run`'s header template — its number, counts, payload bytes and offsets — scans its pages
 * for zero ones (`zeroPages`), and sends header and pages with data (straight from the
 * memory; a file's pages faulted in first with `populate`) as one copying sendmsg that
 * waits in poll(2) when the socket is full. Zero pages `toCaller` go to `zeroList` from
 * index `zeroCount` (a packet of only those is not sent). Returns what it sent (the same
 * object each call): `done` once the cursor ran out; before that, when the abort flag is up
 * or `zeroList` may not hold another packet's zero pages. Errors as the channel's
 * `writeRangesSync` (TimeoutError, SocketError).
 */
export function sendWireRunSync(
  channel: SocketChannel,
  round: RunRound,
  run: SendRun,
  zeroPages: RunZeroPages,
  zeroList: Float64Array,
  zeroCount: number,
  populate: boolean,
): RunSent {
  const { rule, head } = run;
  const headerLength = rule[0], offsetsAt = rule[1], maxCount = rule[6];
  const headBytes = offsetsAt === headerLength ? headerLength + 8 * maxCount : headerLength;
  const { pages, control } = round;
  if (
    rule.length !== 7 || head.length < headBytes || round.perPacket > maxCount ||
    (pages !== null && round.pageCount > pages.length) ||
    !(round.cursorAt < control.length && round.abortAt < control.length)
  ) {
    throw new InvalidArgumentError(
      `sendWireRunSync: a rule of ${rule.length} words for ${headerLength}-byte headers of up to ${maxCount} ` +
        `pages, ${head.length} bytes of head, ${round.perPacket} pages a packet, ${round.pageCount} pages of ` +
        `${pages?.length ?? "the memory's"}, control words ${round.cursorAt} and ${round.abortAt} of ${control.length}`,
    );
  }
  return channel.nativeWriteSync("sendWireRunSync", (fd, ioTimeoutMs) => {
    io.fill(0);
    io[0] = run.packetNumber;
    io[5] = zeroCount;
    const { memory } = round;
    const rc = native.zc_send_run(
      fd,
      memory.address,
      memory.size,
      round.pageSize,
      pages ?? NO_PAGES,
      pages ? 1 : 0,
      round.pageCount,
      round.perPacket,
      control,
      round.cursorAt,
      round.abortAt,
      head,
      rule,
      zeroPages,
      zeroList,
      zeroList.length,
      populate ? 1 : 0,
      memory.sparseFd ?? -1,
      ioTimeoutMs,
      io,
    );
    if (rc === -Errno.EINVAL && io[7] === 0) {
      throw new InvalidArgumentError(
        "sendWireRunSync: a memory, page size, rule or zero list that is not valid, or a page outside the memory",
      );
    }
    run.packetNumber = io[0];
    sent.packets = io[1];
    sent.normalPages = io[2];
    sent.zeroPages = io[3];
    sent.payloadBytes = io[4];
    sent.zeroCount = io[5];
    sent.done = rc === FullResult.done;
    // What the call wrote; a failed send also what its packet had left to write (io[7], else 0).
    channel.countWrite(rc === FullResult.stopped ? FullResult.done : rc, io[6], io[6] + io[7]);
    return sent;
  });
}
