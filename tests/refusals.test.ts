// What a receiver refuses, seen by real peers over loopback: a channel of another session
// (SESSION_MISMATCH) and a second channel with an id already taken (DUPLICATE_CHANNEL) are
// answered with an ERROR reply and closed while the session they tried to join goes on;
// a region above maxSize (REGION_TOO_LARGE) fails the sender's connect with
// TransferRefusedError. And a transfer whose checksums differ ends `verified: false` on
// both sides.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  MultifdReceiver,
  MultifdSender,
  PAGE_SIZE,
  ProtocolError,
  Region,
  type SocketChannel,
  TransferRefusedError,
} from "../mod.ts";
import { importSecret, type SessionKeys } from "../src/multifd/auth.ts";
import { type Init, MAC_BYTES, parseReply, RefusalCode, REPLY_BYTES, ReplyType } from "../src/multifd/wire.ts";
import { fillPattern, SECRET, transfer } from "./helpers/multifd.ts";
import {
  answerResult,
  awaitPeerEnd,
  openRaw,
  randomSessionId,
  readHello,
  sessionOf,
  signedInit,
} from "./helpers/hostile_client.ts";
import { settle, sleep, within } from "./helpers/time.ts";
import { dataPacket, END, header, pageFill, VERDICT } from "./helpers/hostile_stream.ts";
import { patternBytes } from "./helpers/pattern.ts";

const PAGE = PAGE_SIZE;
const SIZE = 16 * PAGE + 100;
/** Long enough for the receiver (in this process) to have verified an INIT written before it. */
const SETTLE_MS = 250;

function channelInit(sessionId: Uint8Array, channelId: number, channelCount: number, regionSize = SIZE): Init {
  return { sessionId, channelId, channelCount, pageSize: PAGE, regionSize, pagesPerPacket: 4, cipher: 0, checksum: 0 };
}

/** The keys of the session each raw channel 0 opened (to end the session by hand). */
const sessions = new WeakMap<SocketChannel, Promise<SessionKeys>>();

/** Opens a raw channel and sends a correctly signed INIT; the reply is left to the caller. */
async function sendInit(port: number, init: Init): Promise<SocketChannel> {
  const channel = await openRaw(port, 10_000);
  const keys = await importSecret(SECRET);
  const nonce = await readHello(channel);
  const initBytes = await signedInit(keys, nonce, init);
  await channel.writev([initBytes]);
  if (init.channelId === 0) sessions.set(channel, sessionOf(keys, nonce, initBytes));
  return channel;
}

/** Reads one reply; resolves its type, status and bytes, or "eof" when the receiver closed first. */
async function readReply(
  channel: SocketChannel,
): Promise<{ type: number; status: number; bytes: Uint8Array } | "eof"> {
  const bytes = new Uint8Array(REPLY_BYTES);
  if (await within(channel.readFull(bytes), 10_000, "a reply") < REPLY_BYTES) return "eof";
  // An INIT_ACK's MAC follows it (checked by the handshake tests; here only taken off the stream).
  if (bytes[4] === ReplyType.INIT_ACK) await channel.readFull(new Uint8Array(MAC_BYTES));
  return { type: bytes[4], status: new DataView(bytes.buffer).getUint32(24), bytes };
}

/** A reply's type and status (or "eof"). */
const statusOf = (reply: Awaited<ReturnType<typeof readReply>>) =>
  reply === "eof" ? reply : { type: reply.type, status: reply.status };

/** The receiver answered `channel` with an ERROR reply carrying `code`, then closed it. */
async function assertRefused(channel: SocketChannel, code: number, what: string): Promise<void> {
  const bytes = new Uint8Array(REPLY_BYTES);
  assert.equal(await within(channel.readFull(bytes), 10_000, what), REPLY_BYTES, `${what}: no reply`);
  assert.throws(() => parseReply(bytes, ReplyType.INIT_ACK), (error: Error) => {
    assert.ok(error instanceof TransferRefusedError, `${what}: ${error.name}: ${error.message}`);
    assert.equal(error.code, code, `${what}: ${error.message}`);
    return true;
  });
  assert.equal(await awaitPeerEnd(channel), "eof", `${what}: the receiver did not close the refused channel`);
}

/**
 * Completes a two-channel session on raw channels that got their INIT_ACK: `page` lands at
 * offset 0 over channel 0, both channels end, and channel 0 confirms the checksum.
 */
async function finishTwoChannels(channels: SocketChannel[], page: Uint8Array): Promise<void> {
  await channels[0].writev([
    dataPacket({ number: 0, normal: [0], regionSize: SIZE, pages: [page] }),
    header({ type: END, number: 1 }),
  ]);
  await channels[1].writev([header({ type: END, number: 0 })]);
  const session = await sessions.get(channels[0])!;
  for (const [id, channel] of channels.entries()) {
    const reply = await readReply(channel);
    assert.ok(reply !== "eof" && reply.type === ReplyType.RESULT, `RESULT expected: ${JSON.stringify(reply)}`);
    const verdict = id === 0 ? header({ type: VERDICT, number: 2, argument: 1 }) : undefined;
    assert.ok(await answerResult(channel, session, reply.bytes, verdict, id));
  }
}

/**
 * Joins channel 1 of a two-channel session whose channel 0 is `channels[0]`, checks both
 * INIT_ACKs, completes the session with `page` (finishTwoChannels) and settles the receive.
 */
async function completeSession(
  port: number,
  sessionId: Uint8Array,
  channels: SocketChannel[],
  page: Uint8Array,
  receiving: ReturnType<typeof receiverForSessionA> extends Promise<{ receiving: infer R }> ? R : never,
) {
  channels.push(await sendInit(port, channelInit(sessionId, 1, 2)));
  for (const channel of channels) {
    assert.deepEqual(statusOf(await readReply(channel)), { type: ReplyType.INIT_ACK, status: 0 });
  }
  await finishTwoChannels(channels, page);
  return await within(receiving, 10_000, "receive");
}

/** Connects a real sender that the receiver must refuse; returns the error its connect fails with. */
async function connectRefused(source: Region, port: number, channels: number): Promise<TransferRefusedError> {
  const connecting = await settle(
    MultifdSender.connect(source, { hostname: "127.0.0.1", port, secret: SECRET, channels, handshakeTimeoutMs: 5_000 }),
  );
  if (connecting.ok) {
    await connecting.value.abort(); // releases the source region, so the test can end
    assert.fail("the receiver let the sender in");
  }
  assert.ok(connecting.error instanceof TransferRefusedError, `${connecting.error.name}: ${connecting.error.message}`);
  return connecting.error;
}

/** Starts a receiver into a fresh region of SIZE; the test then plays session A (two channels). */
async function receiverForSessionA() {
  const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 10_000, ioTimeoutMs: 10_000 });
  const destination = Region.allocate(SIZE);
  const receiving = settle(receiver.receive(destination));
  return { receiver, destination, receiving };
}

describe("receiver refusals", () => {
  test("a channel of another session is refused (SESSION_MISMATCH); the session goes on", async () => {
    const { receiver, destination, receiving } = await receiverForSessionA();
    const sessionA = randomSessionId();
    const channels: SocketChannel[] = [];
    const source = Region.allocate(SIZE);
    try {
      channels.push(await sendInit(receiver.port, channelInit(sessionA, 0, 2)));
      await sleep(SETTLE_MS); // session A has begun: its first channel is in
      // A raw channel of session B...
      const other = await sendInit(receiver.port, channelInit(randomSessionId(), 0, 1));
      await assertRefused(other, RefusalCode.SESSION_MISMATCH, "raw channel of session B");
      other.close();
      // ...and a real sender: its connect fails with the receiver's reason.
      fillPattern(source, 12);
      const error = await connectRefused(source, receiver.port, 1);
      assert.equal(error.code, RefusalCode.SESSION_MISMATCH, error.message);
      assert.match(error.message, /another session is using this receiver/);

      const page = pageFill(0, PAGE, 0x41);
      const outcome = await completeSession(receiver.port, sessionA, channels, page, receiving);
      assert.ok(outcome.ok, `the refused channels disturbed the session: ${!outcome.ok && outcome.error}`);
      assert.equal(outcome.value.verified, true);
      assert.equal(outcome.value.channels, 2);
      assert.deepEqual(destination.view(0, PAGE), page);
    } finally {
      for (const channel of channels) channel.close();
      await receiver.abort();
      await receiving;
      await destination.close();
      await source.close();
    }
  });

  test("a second channel with an id already connected is refused (DUPLICATE_CHANNEL); the session goes on", async () => {
    const { receiver, destination, receiving } = await receiverForSessionA();
    const sessionA = randomSessionId();
    const channels: SocketChannel[] = [];
    try {
      channels.push(await sendInit(receiver.port, channelInit(sessionA, 0, 2)));
      await sleep(SETTLE_MS);
      const duplicate = await sendInit(receiver.port, channelInit(sessionA, 0, 2));
      await assertRefused(duplicate, RefusalCode.DUPLICATE_CHANNEL, "second channel 0");
      duplicate.close();

      const page = pageFill(0, PAGE, 0x42);
      const outcome = await completeSession(receiver.port, sessionA, channels, page, receiving);
      assert.ok(outcome.ok, `the duplicate disturbed the session: ${!outcome.ok && outcome.error}`);
      assert.equal(outcome.value.verified, true);
      assert.deepEqual(destination.view(0, PAGE), page);
    } finally {
      for (const channel of channels) channel.close();
      await receiver.abort();
      await receiving;
      await destination.close();
    }
  });

  test("channels of one session that name different checksum MACs: BAD_PARAMETERS, and the receive fails", async () => {
    const { receiver, destination, receiving } = await receiverForSessionA();
    const sessionA = randomSessionId();
    const channels: SocketChannel[] = [];
    try {
      channels.push(await sendInit(receiver.port, channelInit(sessionA, 0, 2))); // BLAKE3
      await sleep(SETTLE_MS);
      const aegis = await sendInit(receiver.port, { ...channelInit(sessionA, 1, 2), checksum: 1 });
      channels.push(aegis);
      await assertRefused(aegis, RefusalCode.BAD_PARAMETERS, "channel 1 naming AEGIS-128L-MAC");
      const outcome = await within(receiving, 10_000, "receive");
      assert.ok(!outcome.ok, "the receive must fail");
      assert.ok(outcome.error instanceof ProtocolError, `${outcome.error}`);
      assert.match(outcome.error.message, /disagree on its parameters/);
    } finally {
      for (const channel of channels) channel.close();
      await receiver.abort();
      await receiving;
      await destination.close();
    }
  });

  test("a region above maxSize: the sender's connect fails with TransferRefusedError (REGION_TOO_LARGE)", async () => {
    const maxSize = 16 * PAGE;
    const source = Region.allocate(maxSize + 1);
    const receiver = await MultifdReceiver.listen({ secret: SECRET, maxSize, handshakeTimeoutMs: 5_000 });
    let destinations = 0;
    const receiving = settle(receiver.receive((size) => (destinations++, Region.allocate(size))));
    try {
      // Of its two channels, the one refused names the reason (the other is just closed).
      const error = await connectRefused(source, receiver.port, 2);
      assert.equal(error.code, RefusalCode.REGION_TOO_LARGE, error.message);
      assert.match(error.message, /larger than the receiver's limit/);
      const outcome = await within(receiving, 10_000, "receive");
      assert.equal(outcome.ok, false, "the receive must fail");
      if (!outcome.ok) {
        assert.ok(outcome.error instanceof TransferRefusedError, `${outcome.error}`);
        assert.equal(outcome.error.code, RefusalCode.REGION_TOO_LARGE);
      }
      assert.equal(destinations, 0, "no destination may be prepared for a refused region");
    } finally {
      await receiver.abort();
      await receiving;
      await source.close();
    }
  });

  test("a region of exactly maxSize is accepted", async () => {
    const maxSize = 16 * PAGE;
    const source = Region.allocate(maxSize);
    fillPattern(source, 8);
    const { sent, received, destination } = await transfer(source, {
      receiver: { maxSize },
      sender: { channels: 2 },
    });
    assert.equal(sent.verified, true);
    assert.equal(received.verified, true);
    assert.ok(destination.equals(source));
    await destination.close();
    await source.close();
  });
});

describe("checksum mismatch", () => {
  test("the source changes after its last round: verified is false on both sides", async () => {
    const source = Region.allocate(SIZE);
    fillPattern(source, 31);
    const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 10_000 });
    const destination = Region.allocate(SIZE);
    const receiving = receiver.receive(destination);
    receiving.catch(() => {});
    let sender: MultifdSender | undefined;
    try {
      sender = await MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: SECRET,
        channels: 2,
        pagesPerPacket: 4,
      });
      await sender.sendRound();
      const sentBytes = source.view().slice();
      // Written after the last round and never sent again: the copy is not the source.
      source.write(5 * PAGE + 7, patternBytes(100, 99));
      const sent = await sender.finish();
      const received = await within(receiving, 10_000, "receive");

      assert.equal(sent.verified, false, "the sender verified a copy that differs from its source");
      assert.equal(received.verified, false, "the receiver was told the copy is verified");
      assert.notEqual(sent.checksum, sent.remoteChecksum);
      assert.equal(sent.remoteChecksum, received.checksum);
      assert.deepEqual(destination.view(), sentBytes, "the receiver holds what was sent");
    } finally {
      await sender?.abort(); // after finish() a no-op; otherwise the source is released
      await receiver.abort();
      await destination.close();
      await source.close();
    }
  });
});
