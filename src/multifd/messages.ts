/**
 * Messages between a transfer's main thread and its channel Workers, and how errors
 * cross that boundary.
 * @module
 */
import type { RegionDescriptor } from "../region.ts";
import type { SharedState } from "./shared_state.ts";

export interface ChannelConfig {
  channelId: number;
  pageSize: number;
  pagesPerPacket: number;
  ioTimeoutMs: number;
  flushTimeoutMs: number;
  userTimeoutMs: number;
  keepaliveIdleS: number;
}

export interface SenderConfig extends ChannelConfig {
  zerocopy: boolean;
  /** This channel's share of the process's locked-memory budget (-1: no limit). */
  zerocopyBudgetBytes: number;
  zeroPages: boolean;
  sendBufferBytes?: number;
}

export type ToSender =
  | { kind: "start"; fd: number; region: RegionDescriptor; state: SharedState; config: SenderConfig }
  /** Send the round's pages (`pages` null: every page of the region), then SYNC and flush. */
  | { kind: "round"; pages: Uint32Array<SharedArrayBuffer> | null; pageCount: number; syncNumber: number }
  | { kind: "checksum"; blocks: number[] }
  | { kind: "end" }
  | { kind: "verdict"; matched: boolean }
  | ExitRequest;

export type FromSender =
  | { kind: "ready" }
  | { kind: "synced"; syncNumber: number; allCopied: boolean }
  | { kind: "hashes"; blocks: number[]; hashes: bigint[] }
  | { kind: "result"; checksum: bigint; bytes: number }
  | { kind: "done" }
  | WorkerExit;

export type ToReceiver =
  | { kind: "start"; fd: number; region: RegionDescriptor; state: SharedState; config: ChannelConfig }
  | { kind: "checksum"; blocks: number[] }
  | { kind: "result"; checksum: bigint; bytes: number; awaitVerdict: boolean }
  | ExitRequest;

export type FromReceiver =
  | { kind: "ready" }
  | { kind: "sync"; syncNumber: number }
  | { kind: "ended" }
  | { kind: "hashes"; blocks: number[]; hashes: bigint[] }
  | { kind: "done"; verdict: boolean | undefined }
  | WorkerExit;

/** Asks a channel Worker to let go of its socket and the region and say so. */
export type ExitRequest = { kind: "exit" };

/**
 * What every channel Worker may report besides its own replies: a failure, and "exited",
 * its answer to {@link ExitRequest}. Messages are handled one at a time, so "exited" proves
 * the Worker has left every native call: only then may the region be unmapped or an fd closed.
 */
export type WorkerExit = { kind: "failed"; error: WireError } | { kind: "exited" };

/** An error as plain data (Error objects lose their class crossing postMessage). */
export interface WireError {
  name: string;
  message: string;
  code?: string;
}

export function toWireError(error: unknown): WireError {
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
      scope.postMessage({ kind: "failed", error: toWireError(error) });
    }
  };
  scope.postMessage({ kind: "ready" });
}
