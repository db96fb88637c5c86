// Channels handed to Workers: the main thread detaches a connected socket, a Worker adopts
// the fd and uses only the blocking (…Sync) calls, while the main thread reads with the
// async API; and a Worker blocked in a …Sync call is woken by abortSocket(fd) from the
// main thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { abortSocket } from "../mod.ts";
import { WorkerInbox } from "../util/worker.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes, sameBytes } from "./helpers/pattern.ts";
import { sleep } from "./helpers/time.ts";
import type { BlockJob, BlockReport } from "./helpers/blocked_worker.ts";
import type { WriteJob, WriterReport } from "./helpers/sync_writer_worker.ts";

describe("a channel adopted by a Worker", () => {
  test("writevZerocopySync in a Worker, readFull on the main thread: exact bytes, every send completed", async () => {
    const SIZE = 48 << 20;
    const SEED = 21;
    const pair = await channelPair({ ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
    const inbox = new WorkerInbox<WriterReport>(new URL("./helpers/sync_writer_worker.ts", import.meta.url));
    try {
      await inbox.ready(20_000);
      const fd = pair.client.detach();
      assert.equal(pair.client.fd, -1);
      const job: WriteJob = { fd, size: SIZE, seed: SEED };
      inbox.worker.postMessage(job);

      const received = new Uint8Array(SIZE);
      assert.equal(await pair.server.readFull(received), SIZE);
      const report = await inbox.next(20_000);
      assert.equal(report.kind, "done", JSON.stringify(report));
      if (report.kind !== "done") return;
      assert.ok(sameBytes(received, patternBytes(SIZE, SEED)), "bytes differ");
      // The Worker closed its end after the flush: the stream ends exactly here.
      assert.equal(await pair.server.readFull(new Uint8Array(1)), 0);

      assert.equal(report.zerocopy, true);
      assert.ok(report.calls > 50, `${report.calls} calls`);
      assert.equal(report.flushed, 1, "loopback copies every zero-copy send");
      assert.equal(report.stats.bytesWritten, SIZE);
      assert.ok(report.stats.zerocopySends >= report.calls);
      assert.equal(report.stats.zerocopyCompletions, report.stats.zerocopySends);
      assert.equal(report.stats.zerocopyCopied, report.stats.zerocopySends);
    } finally {
      inbox.terminate();
      pair.close();
    }
  });
});

describe("abortSocket wakes a Worker blocked in a …Sync call", () => {
  for (const op of ["read", "write"] as const) {
    const call = op === "read" ? "readFullSync with nothing arriving" : "writevZerocopySync to a peer that never reads";
    test(call, async () => {
      const pair = await channelPair({ ioTimeoutMs: 20_000 }, { ioTimeoutMs: 20_000 });
      const inbox = new WorkerInbox<BlockReport>(new URL("./helpers/blocked_worker.ts", import.meta.url));
      try {
        await inbox.ready(20_000);
        const fd = pair.client.detach();
        const job: BlockJob = { fd, op };
        inbox.worker.postMessage(job);
        assert.equal((await inbox.next(20_000)).kind, "blocking");
        await sleep(400);
        assert.equal(inbox.queued, 0, "the worker must still be blocked");

        const abortedAt = performance.now();
        abortSocket(fd);
        const report = await inbox.next(5_000);
        const ms = performance.now() - abortedAt;
        assert.equal(report.kind, "result");
        if (report.kind !== "result") return;
        assert.ok(ms < 2_000, `the worker took ${ms.toFixed(0)} ms to wake up`);
        if (op === "read") {
          // shutdown(SHUT_RDWR) ends the stream for the reader: a short read (EOF).
          assert.equal(report.error, undefined, JSON.stringify(report.error));
          assert.equal(report.returned, 0);
        } else {
          assert.ok(report.error, "the write must fail");
          const ok = report.error.name === "ChannelClosedError" ||
            (report.error.name === "SocketError" && ["EPIPE", "ECONNRESET"].includes(report.error.code ?? ""));
          assert.ok(ok, JSON.stringify(report.error));
        }
        // The peer sees the connection end too.
        const drained = new Uint8Array(1 << 20);
        let n: number;
        do n = await pair.server.readFull(drained).catch(() => 0); while (n === drained.length);
      } finally {
        inbox.terminate();
        pair.close();
      }
    });
  }
});
