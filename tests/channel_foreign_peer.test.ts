// The other end is not this module: a node:net peer in the same process (the runtime's
// own socket implementation) receives a zero-copy stream, and sends one to readFull.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import { connect, listen } from "../mod.ts";
import { patternBytes, random, sameBytes } from "./helpers/pattern.ts";

/** Splits source[start, end) into `count` random-sized views (some may be empty). */
function randomViews(source: Uint8Array, start: number, end: number, count: number, next: (n: number) => number) {
  const cuts = Array.from({ length: count - 1 }, () => start + next(end - start + 1)).sort((a, b) => a - b);
  const bounds = [start, ...cuts, end];
  return bounds.slice(1).map((b, i) => source.subarray(bounds[i], b));
}

describe("a node:net peer", () => {
  test("receives a writevZerocopy stream (random sizes, many iovecs) byte-exact", async () => {
    const SIZE = 40 << 20;
    const source = patternBytes(SIZE, 31);
    const chunks: Buffer[] = [];
    let receivedBytes = 0;
    let serverSocket: net.Socket | undefined;
    let ended!: () => void;
    const streamEnded = new Promise<void>((resolve) => (ended = resolve));
    const server = net.createServer((socket) => {
      serverSocket = socket;
      socket.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        receivedBytes += chunk.length;
      });
      socket.on("end", () => ended());
      socket.on("error", () => ended());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as net.AddressInfo;
    const client = await connect({ hostname: "127.0.0.1", port, zerocopy: true, ioTimeoutMs: 20_000 });
    try {
      assert.equal(client.zerocopy, true);
      const next = random(17);
      let offset = 0;
      let calls = 0;
      while (offset < SIZE) {
        const end = Math.min(SIZE, offset + 1 + next(2 << 20));
        const written = await client.writevZerocopy(randomViews(source, offset, end, 1 + next(1500), next));
        assert.equal(written, end - offset);
        offset = end;
        calls++;
      }
      assert.equal(await client.flushZerocopy(), 1);
      const stats = client.stats;
      assert.equal(stats.bytesWritten, SIZE);
      assert.ok(stats.zerocopySends >= calls);
      assert.equal(stats.zerocopyCompletions, stats.zerocopySends);
      client.close(); // after the flush: a normal FIN, not a reset
      await streamEnded;
      assert.equal(receivedBytes, SIZE);
      assert.ok(sameBytes(Buffer.concat(chunks, receivedBytes), source), "bytes differ");
    } finally {
      client.close();
      serverSocket?.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test("sends a stream that readFull receives byte-exact, then EOF", async () => {
    const SIZE = (24 << 20) + 12345;
    const source = patternBytes(SIZE, 32);
    const listener = await listen({ hostname: "127.0.0.1", port: 0, ioTimeoutMs: 20_000 });
    let socket: net.Socket | undefined;
    try {
      const accepting = listener.accept(10_000);
      socket = net.connect(listener.port, "127.0.0.1");
      socket.on("error", () => {});
      const channel = await accepting;
      try {
        // node:net writes in its own pieces, with backpressure; then a FIN.
        const sending = (async () => {
          const next = random(5);
          for (let offset = 0; offset < SIZE;) {
            const end = Math.min(SIZE, offset + 1 + next(1 << 20));
            const piece = Buffer.from(source.buffer, source.byteOffset + offset, end - offset);
            if (!socket!.write(piece)) await new Promise((resolve) => socket!.once("drain", resolve));
            offset = end;
          }
          socket!.end();
        })();
        const received = new Uint8Array(SIZE);
        // Read in uneven pieces, as a protocol parser would.
        const next = random(6);
        for (let offset = 0; offset < SIZE;) {
          const end = Math.min(SIZE, offset + 1 + next(3 << 20));
          assert.equal(await channel.readFull(received.subarray(offset, end)), end - offset);
          offset = end;
        }
        await sending;
        assert.ok(sameBytes(received, source), "bytes differ");
        assert.equal(await channel.readFull(new Uint8Array(10)), 0, "EOF after the peer's end()");
        assert.equal(channel.stats.bytesRead, SIZE);
      } finally {
        channel.close();
      }
    } finally {
      socket?.destroy();
      listener.close();
    }
  });
});
