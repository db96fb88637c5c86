// Every option of the multifd sender and receiver is validated before anything is opened,
// with a typed error naming it; -1 means "no limit" where the docs say so, and works.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  ChannelClosedError,
  type ChecksumAlgorithm,
  InvalidArgumentError,
  MAX_REGION_BYTES,
  MultifdReceiver,
  MultifdSender,
  Region,
  TimeoutError,
  TransferAbortedError,
} from "../mod.ts";
import { fillPattern, openTcpSockets, SECRET, transfer } from "./helpers/multifd.ts";
import { fastAegisChecksum } from "../src/multifd/checksum.ts";

const base = { hostname: "127.0.0.1", port: 9, secret: SECRET };

describe("multifd options", () => {
  test("sender: every bad option is refused before any connection", async () => {
    const region = Region.allocate(8192);
    const sockets = openTcpSockets();
    const bad: Record<string, unknown>[] = [
      { channels: 0 },
      { channels: 65 },
      { channels: 1.5 },
      { pagesPerPacket: 0 },
      { pagesPerPacket: 1025 },
      { ioTimeoutMs: -2 },
      { ioTimeoutMs: 2 ** 31 },
      { flushTimeoutMs: 0.5 },
      { connectTimeoutMs: -5 },
      { handshakeTimeoutMs: "10" },
      { userTimeoutMs: -1 },
      { keepaliveIdleS: -1 },
      { sendBufferBytes: 1 },
      { port: 70_000 },
      { signal: "stop" },
      { checksum: "md5" },
      { checksum: true },
    ];
    for (const options of bad) {
      await assert.rejects(
        MultifdSender.connect(region, { ...base, ...options } as never),
        (error: Error) =>
          error instanceof InvalidArgumentError && new RegExp(Object.keys(options)[0]).test(error.message),
        JSON.stringify(options),
      );
    }
    assert.equal(region.inUse, 0);
    assert.equal(openTcpSockets(), sockets);
    await region.close();
  });

  test("sender: a region above the protocol's limit is refused up front", async () => {
    // Address space only (never touched): 4 TiB + one page.
    const huge = Region.allocate(MAX_REGION_BYTES + 4096);
    await assert.rejects(MultifdSender.connect(huge, base), InvalidArgumentError);
    assert.equal(huge.inUse, 0);
    await huge.close();
  });

  test("receiver: every bad option is refused before listening", async () => {
    const sockets = openTcpSockets();
    const bad: Record<string, unknown>[] = [
      { maxSize: -1 },
      { maxSize: MAX_REGION_BYTES + 1 },
      { maxSize: 2 ** 53 },
      { ioTimeoutMs: -2 },
      { userTimeoutMs: -1 },
      { keepaliveIdleS: 1.5 },
      { handshakeTimeoutMs: -1 }, // strangers must have a limit: no "no limit" here
      { handshakeTimeoutMs: 0 },
      { maxPendingHandshakes: 0 },
      { maxPendingHandshakes: -1 },
      { maxPendingHandshakes: 1025 },
      { acceptTimeoutMs: -2 },
      { port: -1 },
    ];
    for (const options of bad) {
      await assert.rejects(
        MultifdReceiver.listen({ secret: SECRET, ...options } as never),
        (error: Error) =>
          error instanceof InvalidArgumentError && new RegExp(Object.keys(options)[0]).test(error.message),
        JSON.stringify(options),
      );
    }
    assert.equal(openTcpSockets(), sockets);
  });

  test("ioTimeoutMs -1 (no limit) on both sides: a transfer of several rounds works", async () => {
    const source = Region.allocate(3 << 20);
    fillPattern(source, 5);
    const { sent, received, destination } = await transfer(source, {
      rounds: [[0, 5, 9]],
      receiver: { ioTimeoutMs: -1, acceptTimeoutMs: -1 },
      sender: { channels: 3, ioTimeoutMs: -1, flushTimeoutMs: -1, connectTimeoutMs: -1, handshakeTimeoutMs: -1 },
    });
    assert.equal(sent.verified, true);
    assert.equal(received.verified, true);
    assert.equal(received.rounds, 2);
    assert.ok(destination.equals(source));
    await source.close();
    await destination.close();
  });

  test("acceptTimeoutMs: receive() rejects with TimeoutError when no sender comes", async () => {
    const receiver = await MultifdReceiver.listen({ secret: SECRET, acceptTimeoutMs: 300 });
    const destination = Region.allocate(4096);
    const started = Date.now();
    await assert.rejects(receiver.receive(destination), TimeoutError);
    assert.ok(Date.now() - started >= 250);
    assert.equal(destination.inUse, 0);
    await destination.close();
  });

  test("receive() after close() or abort() rejects at once", async () => {
    const closed = await MultifdReceiver.listen({ secret: SECRET });
    closed.close();
    await assert.rejects(closed.receive(Region.allocate(4096)), ChannelClosedError);
    const aborted = await MultifdReceiver.listen({ secret: SECRET });
    await aborted.abort("not wanted");
    await assert.rejects(aborted.receive(Region.allocate(4096)), TransferAbortedError);
  });

  test("a sender's signal cancels the connection attempt", async () => {
    const source = Region.allocate(8192);
    const receiver = await MultifdReceiver.listen({ secret: SECRET });
    const receiving = receiver.receive(Region.allocate(8192)).catch((e) => e);
    const controller = new AbortController();
    controller.abort("changed my mind");
    await assert.rejects(
      MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: SECRET,
        signal: controller.signal,
      }),
      TransferAbortedError,
    );
    assert.equal(source.inUse, 0);
    await receiver.abort();
    assert.ok((await receiving) instanceof TransferAbortedError);
    await source.close();
  });

  test("checksum: either MAC on request, both ends agree; by default AEGIS-128L-MAC where both have AES instructions", async () => {
    const source = Region.allocate((3 << 20) + 100);
    fillPattern(source, 9);
    const fast = fastAegisChecksum() ? "aegis-128l" : "blake3";
    for (const [checksum, expected] of [["blake3", "blake3"], ["aegis-128l", "aegis-128l"], [undefined, fast]]) {
      const { sent, received, destination } = await transfer(source, {
        sender: { channels: 3, checksum: checksum as ChecksumAlgorithm | undefined },
      });
      assert.deepEqual(
        [sent.checksumAlgorithm, received.checksumAlgorithm, sent.verified, received.verified, sent.checksum],
        [expected, expected, true, true, received.checksum],
        `checksum option ${checksum}`,
      );
      assert.ok(destination.equals(source));
      await destination.close();
    }
    await source.close();
  });

  test("transfer helper still works with defaults", async () => {
    const source = Region.allocate(1 << 20);
    fillPattern(source, 1);
    const { sent, received, destination } = await transfer(source);
    assert.equal(sent.verified && received.verified, true);
    await source.close();
    await destination.close();
  });
});
