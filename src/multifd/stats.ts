/**
 * Transfer statistics in the spirit of QEMU's `query-migrate`, the same shape on both
 * sides.
 * @module
 */
import type { CounterName } from "./shared_state.ts";

export interface TransferStats {
  /** Page payload bytes moved (headers not included). */
  bytes: number;
  /** Transfer time: from the first round (all channels up) to the last sync / end of stream. */
  seconds: number;
  /** bytes / seconds, in 10^9 bytes per second. */
  GBps: number;
  channels: number;
  zerocopy: boolean;
  packets: number;
  pagesNormal: number;
  pagesZero: number;
  /** Rounds completed, each ended by a sync. */
  rounds: number;
  zerocopySends: number;
  zerocopyCopied: number;
  /** Channel flushes at which every completion was copied (QEMU: dirty-sync-missed-zero-copy). */
  zerocopySyncsAllCopied: number;
  perChannelBytes: number[];
  /** Connection, handshake and Worker start-up before the first round (receiver: from listen() until every channel joined). */
  setupSeconds?: number;
  /** Time spent on the region checksum, not part of `seconds`. */
  checksumSeconds?: number;
}

export function transferStats(
  rows: Record<CounterName, number>[],
  seconds: number,
  rounds: number,
  zerocopy: boolean,
): TransferStats {
  const sum = (name: CounterName) => rows.reduce((total, row) => total + row[name], 0);
  const bytes = sum("bytes");
  return {
    bytes,
    seconds: round3(seconds),
    GBps: seconds > 0 ? round3(bytes / seconds / 1e9) : 0,
    channels: rows.length,
    zerocopy,
    packets: sum("packets"),
    pagesNormal: sum("pagesNormal"),
    pagesZero: sum("pagesZero"),
    rounds,
    zerocopySends: sum("zerocopySends"),
    zerocopyCopied: sum("zerocopyCopied"),
    zerocopySyncsAllCopied: sum("syncsAllCopied"),
    perChannelBytes: rows.map((row) => row.bytes),
  };
}

export function hex(value: bigint): string {
  return value.toString(16).padStart(16, "0");
}

export function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}
