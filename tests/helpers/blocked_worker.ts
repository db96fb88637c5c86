/**
 * Worker for channel_worker.test.ts: adopts a socket fd and blocks in one synchronous
 * call on it, to be woken from another thread by abortSocket(fd).
 *
 * Protocol: posts {kind:"ready"}; takes {fd, op: "read" | "write"}; posts
 * {kind:"blocking"} right before the blocking call; closes the channel, then posts
 * {kind:"result", ...} with what the call returned or threw.
 */
import { SocketChannel } from "../../mod.ts";

export interface BlockJob {
  fd: number;
  op: "read" | "write";
}
export type BlockReport =
  | { kind: "ready" }
  | { kind: "blocking" }
  | { kind: "result"; returned?: number; error?: { name: string; code?: string; message: string } };

declare const self: {
  onmessage: ((event: MessageEvent<BlockJob>) => void) | null;
  postMessage(message: BlockReport): void;
};

self.onmessage = ({ data: { fd, op } }) => {
  // A limit well above the test's patience, so a missed wake-up fails the test, not this.
  const channel = new SocketChannel(fd, { zerocopy: true, ioTimeoutMs: 15_000 });
  let report: BlockReport;
  try {
    self.postMessage({ kind: "blocking" });
    const returned = op === "read"
      ? channel.readFullSync(new Uint8Array(1 << 20))
      : channel.writevZerocopySync([new Uint8Array(64 << 20).fill(3)]); // far beyond the socket buffers
    report = { kind: "result", returned };
  } catch (error) {
    const e = error as Error & { code?: string };
    report = { kind: "result", error: { name: e.name, code: e.code, message: e.message } };
  } finally {
    channel.close();
  }
  self.postMessage(report);
};
self.postMessage({ kind: "ready" });
