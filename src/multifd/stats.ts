/**
 * Transfer statistics in the spirit of QEMU's `query-migrate`, the same shape on both
 * sides.
 * @module
 */
import type { Cipher } from "./aead.ts";
import type { CounterName } from "./shared_state.ts";

/**
 * Counters of a multifd transfer, the same shape on both sides (as QEMU's `query-migrate`):
 * `MultifdSender.stats` / `MultifdReceiver.stats` during it, and the base of
 * `SenderResult` / `ReceiverResult` at the end.
 *
 * @example A progress line, once per second during a transfer
 * ```ts
 * import type { MultifdSender } from "zerocopy-multifd";
 *
 * function watch(sender: MultifdSender): () => void {
 *   const timer = setInterval(() => {
 *     const { bytes, GBps, rounds, zerocopyCopied, zerocopySends } = sender.stats;
 *     console.log(`${bytes} B, ${GBps} GB/s, round ${rounds}, ${zerocopyCopied}/${zerocopySends} zero-copy sends copied`);
 *   }, 1000);
 *   return () => clearInterval(timer);
 * }
 * ```
 */
export interface TransferStats {
  /** Page payload bytes moved (headers not included). */
  bytes: number;
  /** Transfer time: from the first round (all channels up) to the last sync / end of stream. */
  seconds: number;
  /** bytes / seconds, in 10^9 bytes per second. */
  GBps: number;
  /** Channels (connections, one Worker each) of the transfer. */
  channels: number;
  /** Whether page data went with MSG_ZEROCOPY (always false on the receiver). */
  zerocopy: boolean;
  /** The cipher of encrypted channels (`encrypt`), or "none": plain packets. */
  encryption: Cipher | "none";
  /** Data packets moved. */
  packets: number;
  /** Pages moved with their contents. */
  pagesNormal: number;
  /** All-zero pages moved as offsets only (`zeroPages`). */
  pagesZero: number;
  /** Rounds completed, each ended by a sync. */
  rounds: number;
  /** Successful MSG_ZEROCOPY sendmsg calls, all channels together. */
  zerocopySends: number;
  /** Completed zero-copy sends the kernel copied after all (all of them on loopback). */
  zerocopyCopied: number;
  /** Channel flushes at which every completion was copied (QEMU: dirty-sync-missed-zero-copy). */
  zerocopyFlushesAllCopied: number;
  /**
   * Channels that stopped using MSG_ZEROCOPY because the kernel copied every one of their
   * first zero-copy sends (`zerocopyFallback`; always the case on loopback).
   */
  zerocopyFallbacks: number;
  /** `bytes` of each channel, by channel id. */
  perChannelBytes: number[];
  /** Set-up before the data: connection, handshakes and Worker start-up (receiver: from receive() until its channel Workers run). */
  setupSeconds?: number;
  /** Time spent on the region checksum, not part of `seconds`. */
  checksumSeconds?: number;
}

export function transferStats(
  rows: Record<CounterName, number>[],
  seconds: number,
  rounds: number,
  zerocopy: boolean,
  encryption: Cipher | "none",
): TransferStats {
  const sum = (name: CounterName) => rows.reduce((total, row) => total + row[name], 0);
  const bytes = sum("bytes");
  return {
    bytes,
    seconds: round3(seconds),
    GBps: seconds > 0 ? round3(bytes / seconds / 1e9) : 0,
    channels: rows.length,
    zerocopy,
    encryption,
    packets: sum("packets"),
    pagesNormal: sum("pagesNormal"),
    pagesZero: sum("pagesZero"),
    rounds,
    zerocopySends: sum("zerocopySends"),
    zerocopyCopied: sum("zerocopyCopied"),
    zerocopyFlushesAllCopied: sum("zerocopyFlushesAllCopied"),
    zerocopyFallbacks: sum("zerocopyFallbacks"),
    perChannelBytes: rows.map((row) => row.bytes),
  };
}

export function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}
