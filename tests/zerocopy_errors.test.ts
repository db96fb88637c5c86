// The zero-copy error paths, each caused for real by the kernel: the error queue holding
// a record that is not a zero-copy completion (ZeroCopyCompletionError), a socket whose
// type refuses SO_ZEROCOPY (ZeroCopyUnsupportedError, never a silent fallback), and
// close() with zero-copy sends not yet flushed (the peer sees a reset, not an end).
//
// The kernel calls the module does not make itself (setsockopt SO_TIMESTAMPING, a
// socketpair) come from libc through the runtime's own FFI, below.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Buffer } from "node:buffer";
import net from "node:net";
import { connect, runtime, SocketChannel, ZeroCopyCompletionError, ZeroCopyUnsupportedError } from "../mod.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes, sameBytes } from "./helpers/pattern.ts";

// --- libc, for what the module under test does not do ---

const SOL_SOCKET = 1;
const SO_TIMESTAMPING = 37; // SO_TIMESTAMPING_OLD on x86-64
const SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1;
const SOF_TIMESTAMPING_SOFTWARE = 1 << 4;
const SOF_TIMESTAMPING_OPT_ID = 1 << 7;
const SOF_TIMESTAMPING_TX_SCHED = 1 << 8;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
/** ee_origin of a transmit timestamp on the error queue, and its ee_errno (ENOMSG). */
const SO_EE_ORIGIN_TIMESTAMPING = 4;
const ENOMSG = 42;

interface Libc {
  setsockopt(fd: number, level: number, name: number, value: Uint8Array, length: number): number;
  socketpair(domain: number, type: number, protocol: number, fds: Int32Array): number;
}

async function openLibc(): Promise<Libc> {
  if (runtime === "deno") {
    const lib = Deno.dlopen(
      "libc.so.6",
      {
        setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
        socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
      } as const,
    );
    return lib.symbols as unknown as Libc;
  }
  const specifier = "bun:ffi"; // computed: Deno must not resolve it
  const ffi = await import(specifier) as {
    dlopen(path: string, table: Record<string, { args: string[]; returns: string }>): { symbols: unknown };
  };
  const lib = ffi.dlopen("libc.so.6", {
    setsockopt: { args: ["i32", "i32", "i32", "buffer", "u32"], returns: "i32" },
    socketpair: { args: ["i32", "i32", "i32", "buffer"], returns: "i32" },
  });
  return lib.symbols as Libc;
}

const libc = await openLibc();

function int32(value: number): Uint8Array {
  return new Uint8Array(Int32Array.of(value).buffer);
}

// --- the tests ---

describe("zero-copy errors from the kernel", () => {
  test("a transmit timestamp on the error queue: the flush fails with ZeroCopyCompletionError", async () => {
    const pair = await channelPair({ zerocopy: true, ioTimeoutMs: 10_000 }, { ioTimeoutMs: 10_000 });
    try {
      assert.equal(pair.client.zerocopy, true);
      // Software transmit timestamps: the kernel queues one record on the error queue for
      // each send when it enters the queueing layer and when the device takes it, before
      // the send's zero-copy completion (which waits for the ACK).
      const flags = SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE |
        SOF_TIMESTAMPING_OPT_ID;
      assert.equal(libc.setsockopt(pair.client.fd, SOL_SOCKET, SO_TIMESTAMPING, int32(flags), 4), 0, "setsockopt");
      const data = patternBytes(256 << 10, 9);
      const received = new Uint8Array(data.length);
      const [written] = await Promise.all([pair.client.writevZerocopy([data]), pair.server.readFull(received)]);
      assert.equal(written, data.length);
      assert.ok(sameBytes(received, data), "the data itself arrives");
      const error = await pair.client.flushZerocopy().then(
        (result) => assert.fail(`flushZerocopy resolved ${result} with a timestamp on the error queue`),
        (error: Error) => error,
      );
      assert.ok(error instanceof ZeroCopyCompletionError, `${error.name}: ${error.message}`);
      assert.equal(error.origin, SO_EE_ORIGIN_TIMESTAMPING, error.message);
      assert.equal(error.errno, ENOMSG, error.message);
      assert.match(error.message, /origin 4/);
    } finally {
      pair.close();
    }
  });

  test("a socket type that refuses SO_ZEROCOPY (AF_UNIX): writevZerocopy throws ZeroCopyUnsupportedError", async () => {
    const fds = new Int32Array(2);
    assert.equal(libc.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0, "socketpair");
    const channel = new SocketChannel(fds[0], { zerocopy: true, ioTimeoutMs: 5_000 });
    const peer = new SocketChannel(fds[1], { ioTimeoutMs: 5_000 });
    try {
      assert.equal(channel.zerocopy, false, "the kernel refuses SO_ZEROCOPY on an AF_UNIX socket");
      const data = patternBytes(100_000, 4);
      const unsupported = (error: Error) => {
        assert.ok(error instanceof ZeroCopyUnsupportedError, `${error.name}: ${error.message}`);
        assert.match(error.message, /setsockopt\(SO_ZEROCOPY\) failed: EOPNOTSUPP/);
        return true;
      };
      await assert.rejects(channel.writevZerocopy([data]), unsupported);
      assert.throws(() => channel.writevZerocopySync([data]), unsupported);
      assert.equal(channel.stats.bytesWritten, 0, "a refused zero-copy write must write nothing");
      assert.equal(await channel.flushZerocopy(), 0);
      // No fallback, but the channel itself works: a plain write arrives.
      const received = new Uint8Array(data.length);
      const [written, read] = await Promise.all([channel.writev([data]), peer.readFull(received)]);
      assert.equal(written, data.length);
      assert.equal(read, data.length);
      assert.ok(sameBytes(received, data));
      assert.equal(channel.stats.zerocopySends, 0);
    } finally {
      channel.close();
      peer.close();
    }
  });

  test("close() with unflushed zero-copy sends resets the connection; after a flush it ends it", async () => {
    const peers: { bytes: number; ended: Promise<string> }[] = [];
    const server = net.createServer((socket) => {
      const peer = { bytes: 0, ended: Promise.resolve("") };
      peer.ended = new Promise((resolve) => {
        socket.on("data", (chunk: Buffer) => (peer.bytes += chunk.length));
        socket.on("end", () => resolve("end"));
        socket.on("error", (error: Error & { code?: string }) => resolve(error.code ?? error.message));
      });
      peers.push(peer);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as net.AddressInfo;
    const data = patternBytes(1 << 20, 21);
    const open = async () => {
      const count = peers.length;
      const channel = await connect({ hostname: "127.0.0.1", port, zerocopy: true, ioTimeoutMs: 10_000 });
      while (peers.length === count) await new Promise((resolve) => setTimeout(resolve, 5));
      return { channel, peer: peers[count] };
    };
    const settled = (peer: { ended: Promise<string> }) =>
      Promise.race([peer.ended, new Promise((resolve) => setTimeout(() => resolve("still open after 10 s"), 10_000))]);
    try {
      // Flushed first: close() is an ordinary close, the peer reads everything, then EOF.
      const flushed = await open();
      assert.equal(await flushed.channel.writevZerocopy([data]), data.length);
      assert.equal(await flushed.channel.flushZerocopy(), 1);
      flushed.channel.close();
      assert.equal(await settled(flushed.peer), "end");
      assert.equal(flushed.peer.bytes, data.length);

      // Not flushed: the kernel may still read the buffers, so close() resets (SO_LINGER 0).
      const unflushed = await open();
      assert.equal(await unflushed.channel.writevZerocopy([data]), data.length);
      assert.ok(unflushed.channel.zerocopyPending > 0, "the sends are still unflushed");
      unflushed.channel.close();
      assert.equal(await settled(unflushed.peer), "ECONNRESET", "the peer must see a reset, not an end");
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
