/**
 * Messages between a transfer's main thread and its channel Workers, and how errors
 * cross that boundary.
 * @module
 */
import type { RegionDescriptor } from "../region.ts";
import type { ResolvedChannelOptions } from "../channel_options.ts";
import type { CodecConfig } from "./codec.ts";
import type { SharedState } from "./shared_state.ts";
import type { ChecksumAlgorithm } from "./checksum.ts";

/** What a channel Worker is started with: its channel options resolved, and its codec's. */
export interface ChannelConfig extends ResolvedChannelOptions, CodecConfig {}

/** A send channel's: also whether to send zero pages as offsets, and its locked-memory share. */
/**
 * Zero-copy page data a sending channel sends before it judges whether the kernel copies
 * all of it (SenderOptions.zerocopyFallback): 32 MiB, 64 packets of 512 KiB or 8 of 4 MiB.
 */
export const ZEROCOPY_FALLBACK_BYTES = 32 * 2 ** 20;

/**
 * Completions a sending channel waits for before that judgement: its packets in
 * {@link ZEROCOPY_FALLBACK_BYTES} (at least 8, so that one copied send, say a
 * retransmission, does not decide).
 */
export function zerocopyFallbackSends(packetBytes: number): number {
  return Math.max(8, Math.ceil(ZEROCOPY_FALLBACK_BYTES / packetBytes));
}

export interface SenderConfig extends ChannelConfig {
  zeroPages: boolean;
  zerocopyFallback: boolean;
  /** This channel's share of the process's locked-memory budget (-1: no limit). */
  zerocopyBudgetBytes: number;
}

export type ToSender =
  | { kind: "start"; role: "send"; fd: number; region: RegionDescriptor; state: SharedState; config: SenderConfig }
  /** Send the round's pages (`pages` null: every page of the region), then SYNC and flush. */
  /** `block`: QEMU's format, the RAM block (index in `config.qemu.ramBlocks`) the round's pages are in. */
  | {
    kind: "round";
    pages: Uint32Array<SharedArrayBuffer> | null;
    pageCount: number;
    syncNumber: number;
    block?: number;
  }
  | { kind: "checksum"; blocks: number[]; key: Uint8Array; algorithm: ChecksumAlgorithm }
  /** Send END (answered "endSent"), so the receiver hashes its region while this side hashes its own. */
  | { kind: "end" }
  /** Read the receiver's RESULT (answered "result"). */
  | { kind: "readResult" }
  /** Channel 0 sends the VERDICT, followed by `mac` (auth.ts signVerdict); the others just close. */
  | { kind: "verdict"; matched: boolean; mac: Uint8Array }
  | ExitRequest;

export type FromSender =
  | { kind: "ready" }
  | { kind: "synced"; syncNumber: number; allCopied: boolean }
  /** All-zero pages the format's packets do not carry (SendCodec.zeroPagesElsewhere): their offsets in the round's block, before its "synced". */
  | { kind: "zeroPages"; offsets: Float64Array }
  | { kind: "hashes"; blocks: number[]; hashes: Uint8Array[] }
  | { kind: "endSent" }
  /** The receiver's RESULT, and the MAC that followed it (checked by the main thread). */
  | { kind: "result"; checksum: Uint8Array; bytes: number; mac: Uint8Array }
  | { kind: "done" }
  | WorkerExit;

export type ToReceiver =
  | { kind: "start"; role: "receive"; fd: number; region: RegionDescriptor; state: SharedState; config: ChannelConfig }
  | { kind: "checksum"; blocks: number[]; key: Uint8Array; algorithm: ChecksumAlgorithm }
  /** Send RESULT followed by `mac` (auth.ts signResult); channel 0 then reads the VERDICT. */
  | { kind: "result"; checksum: Uint8Array; bytes: number; mac: Uint8Array; awaitVerdict: boolean }
  | ExitRequest;

export type FromReceiver =
  | { kind: "ready" }
  | { kind: "sync"; syncNumber: number }
  | { kind: "ended" }
  | { kind: "hashes"; blocks: number[]; hashes: Uint8Array[] }
  /** Channel 0: the sender's VERDICT and the MAC that followed it (checked by the main thread). */
  | { kind: "done"; verdict: { matched: boolean; mac: Uint8Array } | undefined }
  | WorkerExit;

/** Asks a channel Worker to let go of its socket and the region and say so. */
export type ExitRequest = { kind: "exit" };

/**
 * What every channel Worker may report besides its own replies: a failure, and "exited",
 * its answer to {@link ExitRequest}. Messages are handled one at a time, so "exited" proves
 * the Worker has left every native call: only then may the region be unmapped or an fd closed.
 */
export type WorkerExit = { kind: "failed"; error: ChannelErrorInfo } | { kind: "exited" };

/**
 * The error a channel Worker failed with, as plain data: an Error's class does not survive
 * postMessage, so its `name` says which it was (e.g. "ProtocolError", "SocketError").
 */
export interface ChannelErrorInfo {
  /** The error's class name, e.g. "ProtocolError". */
  name: string;
  /** The error's message. */
  message: string;
  /** The error's `code`, if it had one (an errno name such as "ECONNRESET"). */
  code?: string;
}

function toErrorInfo(error: unknown): ChannelErrorInfo {
  const e = error as { name?: string; message?: string; code?: string };
  return { name: e?.name ?? "Error", message: e?.message ?? String(error), code: e?.code };
}

interface WorkerScope<In> {
  onmessage: ((event: MessageEvent<In | ExitRequest>) => void) | null;
  postMessage(message: { kind: "ready" } | WorkerExit): void;
}

/**
 * A channel Worker's message loop: `handle` runs each message to completion (blocking
 * calls included); an error gives the socket up and is reported as "failed"; "exit" gives
 * it up and answers "exited". Announces "ready" once listening: a message posted to a
 * Worker before that would be lost.
 */
export function serveChannelWorker<In>(handle: (message: In) => void, relinquish: () => void): void {
  const scope = globalThis as unknown as WorkerScope<In>;
  scope.onmessage = (event) => {
    try {
      if ((event.data as ExitRequest).kind === "exit") {
        relinquish();
        scope.postMessage({ kind: "exited" });
        return;
      }
      handle(event.data as In);
    } catch (error) {
      relinquish();
      scope.postMessage({ kind: "failed", error: toErrorInfo(error) });
    }
  };
  scope.postMessage({ kind: "ready" });
}
