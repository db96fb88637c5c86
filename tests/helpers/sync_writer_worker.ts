/**
 * Worker for channel_worker.test.ts: adopts a connected socket fd with zero-copy and
 * writes a known pattern with blocking calls only (writevZerocopySync in many calls,
 * then flushZerocopySync), as a multifd send thread does.
 *
 * Protocol: posts {kind:"ready"} once it listens; takes {fd, size, seed}; closes the
 * channel, then posts {kind:"done", calls, flushed, zerocopy, stats} or {kind:"error", ...}.
 */
import { type ChannelStats, SocketChannel } from "../../mod.ts";
import { patternBytes, random } from "./pattern.ts";

export interface WriteJob {
  fd: number;
  size: number;
  seed: number;
}
export type WriterReport =
  | { kind: "ready" }
  | { kind: "done"; calls: number; flushed: number; zerocopy: boolean; stats: ChannelStats }
  | { kind: "error"; name: string; code?: string; message: string };

declare const self: {
  onmessage: ((event: MessageEvent<WriteJob>) => void) | null;
  postMessage(message: WriterReport): void;
};

self.onmessage = ({ data: { fd, size, seed } }) => {
  let report: WriterReport;
  const channel = new SocketChannel(fd, { zerocopy: true, ioTimeoutMs: 20_000 });
  try {
    const source = patternBytes(size, seed);
    const next = random(seed);
    let offset = 0;
    let calls = 0;
    while (offset < size) {
      // 1 B .. 512 KiB per call, split into 1..8 iovecs.
      const end = Math.min(size, offset + 1 + next(512 * 1024));
      const cuts = Array.from({ length: next(8) }, () => offset + next(end - offset + 1)).sort((a, b) => a - b);
      const bounds = [offset, ...cuts, end];
      const views = bounds.slice(1).map((b, i) => source.subarray(bounds[i], b));
      if (channel.writevZerocopySync(views) !== end - offset) throw new Error("short write");
      offset = end;
      calls++;
    }
    const flushed = channel.flushZerocopySync();
    report = { kind: "done", calls, flushed, zerocopy: channel.zerocopy, stats: channel.stats };
  } catch (error) {
    const e = error as Error & { code?: string };
    report = { kind: "error", name: e.name, code: e.code, message: e.message };
  } finally {
    channel.close();
  }
  self.postMessage(report);
};
self.postMessage({ kind: "ready" });
