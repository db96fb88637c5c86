/**
 * The Worker of bench/stream.ts's synchronous cases: adopts the connected socket and
 * streams with `writevSync` / `writevZerocopySync` (then `flushZerocopySync`), blocking
 * this thread only, as the multifd channel Workers do.
 * @module
 */
import { SocketChannel } from "../mod.ts";
import { processCpuSeconds } from "../util/cpu.ts";
import { makeSource, sliceAt, SOURCE_BYTES } from "./lib/source.ts";

export interface WorkerJob {
  fd: number;
  bytes: number;
  writeBytes: number;
  zerocopy: boolean;
  /** Bytes into a page where the source starts (0: page-aligned). */
  sourceOffset: number;
}

export interface WorkerOutcome {
  bytes: number;
  seconds: number;
  cpuSeconds: number;
  calls: number;
  zerocopySends: number;
  zerocopyCopied: number;
  error?: string;
}

declare const self: {
  onmessage: ((event: MessageEvent<WorkerJob>) => void) | null;
  postMessage(message: unknown): void;
};

self.onmessage = ({ data: job }) => {
  const channel = new SocketChannel(job.fd, { zerocopy: job.zerocopy });
  try {
    const source = makeSource(SOURCE_BYTES, job.sourceOffset);
    let sent = 0;
    let calls = 0;
    const cpuStarted = processCpuSeconds(); // the whole process: every thread counts
    const started = performance.now();
    while (sent < job.bytes) {
      const view = sliceAt(source, sent, job.writeBytes, job.bytes);
      sent += job.zerocopy ? channel.writevZerocopySync([view]) : channel.writevSync([view]);
      calls++;
    }
    if (job.zerocopy) channel.flushZerocopySync();
    const seconds = (performance.now() - started) / 1000;
    const cpuSeconds = processCpuSeconds() - cpuStarted;
    const stats = channel.stats;
    channel.close(); // before replying: the main thread may terminate this Worker at once
    const outcome: WorkerOutcome = {
      bytes: sent,
      seconds,
      cpuSeconds,
      calls,
      zerocopySends: stats.zerocopySends,
      zerocopyCopied: stats.zerocopyCopied,
    };
    self.postMessage(outcome);
  } catch (error) {
    self.postMessage({ error: String(error) });
  } finally {
    channel.close(); // a no-op when already closed
  }
};
self.postMessage({ kind: "ready" });
