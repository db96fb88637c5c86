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
  zeroPages: boolean;
  sendBufferBytes?: number;
}

export type ToSender =
  | { kind: "start"; fd: number; region: RegionDescriptor; state: SharedState; config: SenderConfig }
  /** Send the round's pages (`pages` null: every page of the region), then SYNC and flush. */
  | { kind: "round"; pages: Uint32Array<SharedArrayBuffer> | null; pageCount: number; syncNumber: number }
  | { kind: "checksum"; blocks: number[] }
  | { kind: "end" }
  | { kind: "verdict"; matched: boolean };

export type FromSender =
  | { kind: "ready" }
  | { kind: "synced"; syncNumber: number; allCopied: boolean }
  | { kind: "hashes"; blocks: number[]; hashes: bigint[] }
  | { kind: "result"; checksum: bigint; bytes: number }
  | { kind: "done" }
  | { kind: "failed"; error: WireError };

export type ToReceiver =
  | { kind: "start"; fd: number; region: RegionDescriptor; state: SharedState; config: ChannelConfig }
  | { kind: "checksum"; blocks: number[] }
  | { kind: "result"; checksum: bigint; bytes: number; awaitVerdict: boolean };

export type FromReceiver =
  | { kind: "ready" }
  | { kind: "sync"; syncNumber: number }
  | { kind: "ended" }
  | { kind: "hashes"; blocks: number[]; hashes: bigint[] }
  | { kind: "done"; verdict: boolean | undefined }
  | { kind: "failed"; error: WireError };

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
  onmessage: ((event: MessageEvent<In>) => void) | null;
  postMessage(message: { kind: "ready" } | { kind: "failed"; error: WireError }): void;
}

/**
 * A channel Worker's message loop: `handle` runs each message to completion (blocking
 * calls included); an error gives the socket up and is reported as "failed". Announces
 * "ready" once listening: a message posted to a Worker before that would be lost.
 */
export function serveChannelWorker<In>(handle: (message: In) => void, relinquish: () => void): void {
  const scope = globalThis as unknown as WorkerScope<In>;
  scope.onmessage = (event) => {
    try {
      handle(event.data);
    } catch (error) {
      relinquish();
      scope.postMessage({ kind: "failed", error: toWireError(error) });
    }
  };
  scope.postMessage({ kind: "ready" });
}
