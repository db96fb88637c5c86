/**
 * @internal Data packets sent straight from memory, each in one native call on a channel's
 * socket (zig/transfer.zig `zc_send_pages`): the sending counterpart of wire_reads.ts, a
 * channel Worker's hot path when its pages are copied by the kernel (no zero-copy). The
 * page ranges were a native call of their own, the iovecs built in JS, the send another
 * call; each crossing, and each line of that JS, runs from the cold caches the last
 * packet's copy left.
 *
 * The calls are writes of the channel ({@link SocketChannel.nativeSync}): one at a time
 * per channel, counted in its stats, their timeouts and errors the channel's own.
 * @module
 */
import { native } from "../ffi/mod.ts";
import { InvalidArgumentError } from "./errors.ts";
import type { SocketChannel } from "./socket_channel.ts";

/**
 * @internal The data a packet carries: `count` pages at `offsets` (bytes into `memory`,
 * each the start of one of its pages; the memory's last page may be short). A format that
 * sends from a staging buffer describes it as one page of that buffer.
 */
export interface PagePayload {
  /** `populate`: a file region whose pages are faulted in before they are read (RegionDescriptor's). */
  memory: { readonly address: number; readonly size: number; readonly populate?: boolean };
  pageSize: number;
  offsets: Float64Array;
  count: number;
}

/** @internal The offsets of a payload of no pages. */
export const NO_OFFSETS: Float64Array = new Float64Array(0);

/** @internal The bytes of `pages`: whole pages, less what the memory's short last page lacks, if it is one of them. */
export function payloadBytes(pages: PagePayload): number {
  const { memory, pageSize, offsets, count } = pages;
  const short = memory.size % pageSize;
  if (short === 0) return count * pageSize;
  const lastPage = memory.size - short;
  // Lists are ascending in the module's format: then the last is the one to look at.
  for (let i = count - 1; i >= 0; i--) {
    if (offsets[i] === lastPage) return count * pageSize - (pageSize - short);
  }
  return count * pageSize;
}

/** The bytes the last zc_send_pages sent (u64). One per thread (module state): the calls are synchronous. */
const moved = new Uint32Array(2);

/**
 * @internal Writes a packet whole in one native call: `headLength` bytes at `headAddress`
 * (its header and offsets), then its pages (pages that follow each other as one iovec;
 * with `populate`, a file region's pages are faulted in first, best effort). Only while no
 * zero-copy send is outstanding ({@link SocketChannel.nativeCallsAllowed}). Returns the
 * bytes written; errors as the channel's `writeRangesSync`.
 */
export function writePacketSync(
  channel: SocketChannel,
  headAddress: number,
  headLength: number,
  pages: PagePayload,
  populate: boolean,
): number {
  const { memory, pageSize, offsets, count } = pages;
  if (!(count <= offsets.length && pageSize > 0)) {
    throw new InvalidArgumentError(`writePacketSync: ${count} pages of ${pageSize} bytes, room for ${offsets.length}`);
  }
  return channel.nativeSync("write", "writePacketSync", (fd, ioTimeoutMs) => {
    const rc = native.zc_send_pages(
      fd,
      headAddress,
      headLength,
      memory.address,
      memory.size,
      pageSize,
      offsets,
      count,
      populate ? 1 : 0,
      ioTimeoutMs,
      moved,
    );
    const bytes = moved[0] + moved[1] * 0x1_0000_0000;
    return channel.countMoved("write", rc, bytes, rc === 0 ? bytes : headLength + payloadBytes(pages));
  });
}
