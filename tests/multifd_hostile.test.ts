// Hostile peers against a real receiver over loopback: unauthenticated garbage, forged and
// replayed INITs, slow-loris connections, authenticated senders that break the protocol,
// and 200+ mutated packet streams. The receiver must never write outside what valid
// packets allow (the destination sits between guard pages), never hang, and fail only
// with typed errors naming what was wrong.
//
// Reproduce the mutation run: HOSTILE_SEED=<seed> HOSTILE_SESSIONS=<n> (printed by each run).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import {
  ChannelFailedError,
  listen,
  MultifdReceiver,
  MultifdSender,
  Region,
  type SocketChannel,
  TransferAbortedError,
  ZeroCopyMultifdError,
} from "../mod.ts";
import {
  importSecret,
  newNonce,
  type SecretKeys,
  type SessionKeys,
  signInitAck,
  verifyInitAck,
} from "../src/multifd/auth.ts";
import {
  encodeHello,
  encodeReply,
  INIT_BYTES,
  MAC_BYTES,
  PAGE_SIZE,
  parseReply,
  REPLY_BYTES,
  ReplyType,
} from "../src/multifd/wire.ts";
import { type Probe, socketFds, takeFdAsListener, waitForClose } from "./helpers/hostile_fd.ts";
import { fillPattern, SECRET } from "./helpers/multifd.ts";
import {
  answerResult,
  authenticate,
  authenticateSession,
  awaitPeerEnd,
  GuardedRegion,
  oneChannelInit,
  openRaw,
  type PeerEnd,
  readHello,
  sessionOf,
  signedInit,
  transcriptOf,
  writeIgnoringHangup,
} from "./helpers/hostile_client.ts";
import { settle, sleep, within } from "./helpers/time.ts";
import {
  concat,
  dataPacket,
  END,
  generateStream,
  header,
  mutate,
  pageFill,
  predict,
  SYNC,
  VERDICT,
} from "./helpers/hostile_stream.ts";
import { Rng } from "./helpers/rng.ts";

const PAGE = PAGE_SIZE;
/** 64 pages and an odd tail: the last page is short, so a full page there would overflow. */
const SIZE = 64 * PAGE + 1000;
const OTHER_SECRET = "definitely-not-the-receiver-secret";

function envNumber(name: string): number | undefined {
  try {
    const value = process.env[name];
    return value === undefined || value === "" ? undefined : Number(value);
  } catch {
    return undefined;
  }
}

/** The whole allocation as it must be once `source` landed in the destination. */
function withDest(guarded: GuardedRegion, bytes: Uint8Array): Uint8Array {
  const expected = guarded.initial.slice();
  expected.set(bytes, guarded.start);
  return expected;
}

interface Barrage {
  /** Connections opened (every one must be rejected). */
  connections: number;
  /** How each hostile connection ended, seen from the client. */
  ends: Record<string, PeerEnd>;
}

/**
 * Unauthenticated attacks on a listening receiver, all at once: random garbage (with and
 * without reading HELLO), an INIT signed with another secret, a correctly signed INIT with
 * a field changed afterwards, a replayed INIT (signed for another connection's nonce),
 * garbage followed by a well-formed DATA packet, and a connection that says nothing.
 * Resolves once the receiver has closed every one of them.
 */
async function barrage(port: number, regionSize: number): Promise<Barrage> {
  const rightKey = await importSecret(SECRET);
  const wrongKey = await importSecret(OTHER_SECRET);
  const init = oneChannelInit(regionSize, 8);
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  let connections = 0;
  const open = async () => (connections++, await openRaw(port, 10_000));

  // The replay: a valid INIT recorded on one connection (signed for its nonce) and never
  // sent there; that connection is then dropped.
  const recorder = await open();
  const recorded = await signedInit(rightKey, await readHello(recorder), init);
  recorder.close();

  const attacks: Record<string, (channel: SocketChannel) => Promise<void>> = {
    garbage: async (c) => void (await readHello(c), await c.writev([random(96)])),
    garbageBeforeHello: async (c) => void (await c.writev([random(96)]), await readHello(c)),
    wrongSecret: async (c) => void await c.writev([await signedInit(wrongKey, await readHello(c), init)]),
    fieldChangedAfterSigning: async (c) => {
      const bytes = await signedInit(rightKey, await readHello(c), init);
      bytes[43] ^= 1; // pagesPerPacket 8 -> 9: the MAC no longer matches
      await c.writev([bytes]);
    },
    replay: async (c) => void (await readHello(c), await c.writev([recorded])),
    garbageThenData: async (c) => {
      await readHello(c);
      const data = dataPacket({ number: 0, normal: [0, PAGE], regionSize, pages: [random(PAGE), random(PAGE)] });
      await writeIgnoringHangup(c, concat([random(96), data]));
    },
    silent: async (c) => void await readHello(c),
  };
  const ends: Record<string, PeerEnd> = {};
  await Promise.all(
    Object.entries(attacks).map(async ([name, attack]) => {
      const channel = await open();
      try {
        await attack(channel);
        ends[name] = await awaitPeerEnd(channel);
      } finally {
        channel.close();
      }
    }),
  );
  return { connections, ends };
}

function assertAllClosedByReceiver(ends: Record<string, PeerEnd>): void {
  for (const [name, end] of Object.entries(ends)) {
    // Extra unread bytes make the receiver's close a reset; anything else ends cleanly.
    const allowed: PeerEnd[] = name === "garbageThenData" ? ["eof", "reset"] : ["eof"];
    assert.ok(allowed.includes(end), `${name}: the receiver did not close it (${end})`);
  }
}

describe("hostile peers", () => {
  test("unauthenticated garbage, forged and replayed INITs, silence: ignored, the real transfer succeeds", async () => {
    const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 1_000, ioTimeoutMs: 10_000 });
    const guarded = new GuardedRegion(SIZE);
    const source = Region.allocate(SIZE);
    fillPattern(source, 77);
    const receiving = receiver.receive(guarded.dest);
    receiving.catch(() => {});
    try {
      const { connections, ends } = await within(barrage(receiver.port, SIZE), 10_000, "hostile connections");
      assertAllClosedByReceiver(ends);

      // One more connection stays silent in its handshake during the real transfer.
      const lurker = await openRaw(receiver.port, 10_000);
      await readHello(lurker);
      const started = performance.now();
      const sender = await MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: SECRET,
        channels: 2,
        pagesPerPacket: 8,
      });
      await sender.sendRound();
      const sent = await sender.finish();
      const received = await within(receiving, 10_000, "receive");
      const lurkerEnd = await awaitPeerEnd(lurker);
      lurker.close();

      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      assert.equal(received.checksum, sent.checksum);
      assert.ok(guarded.dest.equals(source), "destination differs from source");
      assert.equal(guarded.diff(withDest(guarded, source.view())), undefined);
      assert.ok(
        received.rejectedConnections >= connections,
        `rejectedConnections ${received.rejectedConnections} < ${connections} hostile connections`,
      );
      assert.equal(lurkerEnd, "eof", "the receiver did not close the silent connection");
      console.log(
        `hostile: ${connections} connections rejected (${received.rejectedConnections} counted), ` +
          `transfer ${Math.round(performance.now() - started)} ms`,
      );
    } finally {
      await receiver.abort();
      await source.close();
      await guarded.close();
    }
  });

  test("hostile connections alone never touch the region or its guard pages", async () => {
    const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 1_000 });
    const guarded = new GuardedRegion(SIZE, 3);
    const receiving = settle(receiver.receive(guarded.dest));
    try {
      const { ends } = await within(barrage(receiver.port, SIZE), 10_000, "hostile connections");
      assertAllClosedByReceiver(ends);
      // Twice, in case the first wave left anything behind for the second.
      assertAllClosedByReceiver((await within(barrage(receiver.port, SIZE), 10_000, "second wave")).ends);
    } finally {
      await receiver.abort();
    }
    const outcome = await within(receiving, 10_000, "receive after abort");
    assert.equal(outcome.ok, false);
    if (!outcome.ok) assert.ok(outcome.error instanceof TransferAbortedError, String(outcome.error));
    assert.equal(guarded.diff(), undefined);
    await guarded.close();
  });

  test("slow-loris: one deadline per handshake, and idle connections cannot lock a sender out", async () => {
    const receiver = await MultifdReceiver.listen({
      secret: SECRET,
      handshakeTimeoutMs: 500,
      maxPendingHandshakes: 4,
      ioTimeoutMs: 10_000,
    });
    const guarded = new GuardedRegion(SIZE);
    const source = Region.allocate(SIZE);
    fillPattern(source, 5);
    const receiving = receiver.receive(guarded.dest);
    receiving.catch(() => {});
    const idle: SocketChannel[] = [];
    try {
      // A client that trickles one byte every 100 ms: each byte is progress, so only a
      // single deadline for the whole handshake stops it.
      const trickler = await openRaw(receiver.port, 10_000);
      const opened = performance.now();
      await readHello(trickler);
      const ended = awaitPeerEnd(trickler).then((end) => ({ end, ms: performance.now() - opened }));
      let trickled = 0;
      let open = true;
      ended.then(() => (open = false));
      while (open && trickled < 50) {
        if (!await writeIgnoringHangup(trickler, new Uint8Array([trickled]))) break;
        trickled++;
        await sleep(100);
      }
      const { end, ms } = await ended;
      trickler.close();
      assert.equal(end, "eof", "the receiver did not close the trickling connection");
      assert.ok(ms >= 400 && ms <= 1_000, `trickling connection closed after ${Math.round(ms)} ms (limit 500 ms)`);
      assert.ok(trickled >= 3 && trickled < 12, `${trickled} bytes trickled`);

      // Four silent connections hold every handshake slot...
      for (let i = 0; i < 4; i++) {
        const channel = await openRaw(receiver.port, 10_000);
        idle.push(channel);
        await readHello(channel);
      }
      const idleSince = performance.now();
      const idleEnds = idle.map((channel) =>
        awaitPeerEnd(channel).then((end) => ({ end, ms: performance.now() - idleSince }))
      );
      // ...and a two-channel sender still gets in: the oldest pending connections are evicted.
      const sender = await MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: receiver.port,
        secret: SECRET,
        channels: 2,
        pagesPerPacket: 8,
        handshakeTimeoutMs: 5_000,
      });
      await sender.sendRound();
      const sent = await sender.finish();
      const received = await within(receiving, 10_000, "receive");
      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      assert.ok(guarded.dest.equals(source), "destination differs from source");
      assert.equal(guarded.diff(withDest(guarded, source.view())), undefined);

      const results = await Promise.all(idleEnds);
      for (const [i, r] of results.entries()) assert.equal(r.end, "eof", `idle connection ${i}: ${r.end}`);
      // The two oldest made room for the sender's two channels, well before their deadline.
      assert.ok(
        results[0].ms < 400 && results[1].ms < 400,
        `evictions after ${results.map((r) => Math.round(r.ms))} ms`,
      );
      assert.ok(received.rejectedConnections >= 3, `rejectedConnections ${received.rejectedConnections}`);
      console.log(
        `slow-loris: trickler (${trickled} bytes) closed after ${Math.round(ms)} ms; idle connections closed after ` +
          `${results.map((r) => Math.round(r.ms)).join(", ")} ms`,
      );
    } finally {
      for (const channel of idle) channel.close();
      await receiver.abort();
      await source.close();
      await guarded.close();
    }
  });

  test("a flood of new connections can delay a sender but never fail the receive", async () => {
    // With one handshake slot, each new connection evicts (closes) the oldest pending one.
    // Even rounds: the flood arrives before the sender's INIT, so the sender is evicted for
    // sure. Odd rounds: right after it, so the sender either got in (its INIT was read
    // first) or was evicted. An evicted sender sees the receiver close its connection (EOF,
    // or a reset when its INIT went unread), never anything else; it connects again and
    // gets in. Whatever the flood evicts, the receive goes on and succeeds.
    const key = await importSecret(SECRET);
    const guarded = new GuardedRegion(SIZE);
    const ROUNDS = 12;
    const tally: Record<string, number> = {};
    const count = (what: string) => (tally[what] = (tally[what] ?? 0) + 1);
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const early = round % 2 === 0;
        guarded.reset();
        // The handshake deadline is far beyond the clients' 3 s io timeout: a connection the
        // receiver did not close at once, on eviction, fails the test with a TimeoutError.
        const receiver = await MultifdReceiver.listen({
          secret: SECRET,
          maxPendingHandshakes: 1,
          handshakeTimeoutMs: 20_000,
        });
        const receiving = settle(receiver.receive(guarded.dest));
        const flood: Promise<SocketChannel | undefined>[] = [];
        /** A flood connection, once the receiver has accepted it (it sent HELLO) or closed it. */
        const floodOne = () => {
          const opened = openRaw(receiver.port, 3_000).then(async (c) => {
            await readHello(c).catch(() => {});
            return c;
          }, () => undefined);
          flood.push(opened);
          return opened;
        };
        let client: SocketChannel | undefined;
        try {
          const init = oneChannelInit(SIZE, 4);
          client = await openRaw(receiver.port, 3_000);
          let nonce = await readHello(client);
          let initBytes = await signedInit(key, nonce, init);
          if (early) {
            await floodOne(); // accepted: to make room, the receiver closed the sender's connection
          } else {
            await client.writev([initBytes]);
          }
          for (let i = 0; i <= round % 4; i++) floodOne();
          const reply = new Uint8Array(REPLY_BYTES);
          let seen = await replyOrEnd(client, reply, `round ${round}`);
          assert.ok(!early || seen === "eof", `round ${round}: the flood did not evict the sender (${seen})`);
          if (seen !== "reply") {
            count(`${early ? "evicted before its INIT" : "evicted after its INIT"} (${seen}), then got in`);
            client.close();
            const failed = await Promise.race([receiving, sleep(100).then(() => undefined)]);
            assert.ok(
              failed === undefined,
              `round ${round}: the flood failed the receive: ${failed && !failed.ok && failed.error.message}`,
            );
            await Promise.all(flood); // no flood connection still on its way to evict the next one
            client = await openRaw(receiver.port, 3_000);
            nonce = await readHello(client);
            initBytes = await signedInit(key, nonce, init);
            await client.writev([initBytes]);
            seen = await replyOrEnd(client, reply, `round ${round}, connecting again`);
            assert.equal(seen, "reply", `round ${round}: the sender, connecting again, got no INIT_ACK`);
          } else {
            count("got in");
          }
          parseReply(reply, ReplyType.INIT_ACK);
          const mac = new Uint8Array(MAC_BYTES);
          assert.equal(await client.readFull(mac), MAC_BYTES);
          assert.ok(await verifyInitAck(key, transcriptOf(nonce, initBytes), reply, mac), "the INIT_ACK's MAC");
          const page = pageFill(0, PAGE, 0x5e);
          await client.writev([
            dataPacket({ number: 0, normal: [0], regionSize: SIZE, pages: [page] }),
            header({ type: END, number: 1 }),
          ]);
          assert.equal(await client.readFull(reply), REPLY_BYTES);
          const session = await sessionOf(key, nonce, initBytes);
          assert.ok(await answerResult(client, session, reply, header({ type: VERDICT, number: 2, argument: 1 })));
          const outcome = await within(receiving, 10_000, "receive");
          assert.ok(
            outcome.ok,
            `round ${round}: the flood failed the receive: ${!outcome.ok && outcome.error.message}`,
          );
          assert.equal(outcome.value.verified, true, `round ${round}`);
          const expected = guarded.initialDest().slice();
          expected.set(page, 0);
          assert.equal(guarded.diff(withDest(guarded, expected)), undefined);
        } finally {
          client?.close();
          for (const c of await Promise.all(flood)) c?.close();
          await receiver.abort();
          await receiving;
        }
      }
    } finally {
      await guarded.close();
    }
    console.log(`connection flood: ${JSON.stringify(tally)}`);
    const rounds = Object.values(tally).reduce((sum, n) => sum + n, 0);
    assert.equal(rounds, ROUNDS, `every round must end with the sender in: ${JSON.stringify(tally)}`);
    assert.equal(tally["evicted before its INIT (eof), then got in"], ROUNDS / 2, JSON.stringify(tally));
  });

  describe("an authenticated sender that breaks the protocol", () => {
    const PPP = 8;
    const bad = (offset: number) => pageFill(offset, PAGE, 0x3c); // content of the breaking packets
    /** One breaking page at `offset`, with one header field overridden. */
    const badPage = (number: number, offset: number, override: Parameters<typeof dataPacket>[0]["override"]) =>
      dataPacket({ number, normal: [offset], regionSize: SIZE, pages: [bad(offset)], override });
    // Packet 0 is valid (it lands); packet 1 breaks one rule (it must not).
    const cases: { name: string; field: string; packet: (n: number) => Uint8Array }[] = [
      {
        name: "offset outside the region",
        field: "packet.offset",
        packet: (n) => dataPacket({ number: n, normal: [65 * PAGE], regionSize: SIZE, pages: [bad(65 * PAGE)] }),
      },
      {
        name: "offset far outside the region (2^52)",
        field: "packet.offset",
        packet: (n) => dataPacket({ number: n, normal: [2 ** 52], regionSize: SIZE, pages: [bad(0)] }),
      },
      {
        name: "offset of 2^64 - 4096",
        field: "packet.offset",
        packet: (n) => {
          const bytes = dataPacket({ number: n, normal: [9 * PAGE], regionSize: SIZE, pages: [bad(9 * PAGE)] });
          bytes.fill(0xff, 32, 38), (bytes[38] = 0xf0), (bytes[39] = 0);
          return bytes;
        },
      },
      {
        name: "a full page at the short last page (would overflow into the guard)",
        field: "packet.payloadBytes",
        packet: (n) => dataPacket({ number: n, normal: [64 * PAGE], regionSize: SIZE, pages: [bad(64 * PAGE)] }),
      },
      {
        name: "offset not page-aligned",
        field: "packet.offset",
        packet: (n) => dataPacket({ number: n, normal: [3 * PAGE + 512], regionSize: SIZE, pages: [bad(3 * PAGE)] }),
      },
      {
        name: "wrong packet number",
        field: "packet.number",
        packet: (n) => dataPacket({ number: n + 5, normal: [10 * PAGE], regionSize: SIZE, pages: [bad(10 * PAGE)] }),
      },
      {
        name: "packet number of 2^53",
        field: "packet.number",
        packet: (n) => {
          const bytes = dataPacket({ number: n, normal: [10 * PAGE], regionSize: SIZE, pages: [bad(10 * PAGE)] });
          bytes[9] = 0x20; // high word 0x00200000
          return bytes;
        },
      },
      {
        name: "unknown flag bits",
        field: "packet.flags",
        packet: (n) => badPage(n, 11 * PAGE, { flags: 0x80 }),
      },
      {
        name: "reserved bytes set",
        field: "packet.reserved",
        packet: (n) => badPage(n, 11 * PAGE, { reserved: 1 }),
      },
      {
        name: "bad magic",
        field: "packet.magic",
        packet: (n) => badPage(n, 11 * PAGE, { magic: 0x5a434d51 }),
      },
      {
        name: "payloadBytes smaller than the pages (offsets check)",
        field: "packet.payloadBytes",
        packet: (n) =>
          dataPacket({
            number: n,
            normal: [12 * PAGE, 13 * PAGE],
            regionSize: SIZE,
            pages: [bad(12 * PAGE)],
            override: { normal: 2 },
          }),
      },
      {
        name: "payloadBytes larger than the pages (header check)",
        field: "packet.payloadBytes",
        packet: (n) =>
          dataPacket({
            number: n,
            normal: [12 * PAGE, 13 * PAGE],
            regionSize: SIZE,
            pages: [bad(12 * PAGE), bad(13 * PAGE), bad(14 * PAGE)],
          }),
      },
      {
        name: "duplicate offset",
        field: "packet.offset",
        packet: (n) =>
          dataPacket({
            number: n,
            normal: [14 * PAGE, 14 * PAGE],
            regionSize: SIZE,
            pages: [bad(14 * PAGE), bad(15 * PAGE)],
          }),
      },
      {
        name: "offsets out of order",
        field: "packet.offset",
        packet: (n) =>
          dataPacket({
            number: n,
            normal: [16 * PAGE, 15 * PAGE],
            regionSize: SIZE,
            pages: [bad(16 * PAGE), bad(15 * PAGE)],
          }),
      },
      {
        name: "an offset both a normal and a zero page",
        field: "packet.offset",
        packet: (n) =>
          dataPacket({ number: n, normal: [17 * PAGE], zero: [17 * PAGE], regionSize: SIZE, pages: [bad(17 * PAGE)] }),
      },
      {
        name: "more pages than pagesPerPacket",
        field: "packet.pages",
        packet: (n) => {
          const offsets = Array.from({ length: PPP + 1 }, (_, i) => (20 + i) * PAGE);
          return dataPacket({ number: n, normal: offsets, regionSize: SIZE, pages: offsets.map(bad) });
        },
      },
      {
        name: "no pages",
        field: "packet.pages",
        packet: (n) => dataPacket({ number: n, normal: [], regionSize: SIZE, pages: [] }),
      },
      {
        name: "DATA with an argument",
        field: "packet.argument",
        packet: (n) => badPage(n, 18 * PAGE, { argument: 1 }),
      },
      {
        name: "unknown packet type",
        field: "packet.type",
        packet: (n) => badPage(n, 18 * PAGE, { type: 9 }),
      },
      {
        name: "SYNC out of sequence",
        field: "packet.argument",
        packet: (n) => header({ type: SYNC, number: n, argument: 1 }),
      },
      {
        name: "SYNC carrying pages",
        field: "packet.pages",
        packet: (n) => header({ type: SYNC, number: n, normal: 1 }),
      },
      {
        name: "VERDICT before END",
        field: "packet.type",
        packet: (n) => header({ type: VERDICT, number: n, argument: 1 }),
      },
    ];

    for (const c of cases) {
      test(`${c.name}: ProtocolError (${c.field}), nothing of it lands`, async () => {
        const receiver = await MultifdReceiver.listen({
          secret: SECRET,
          handshakeTimeoutMs: 2_000,
          ioTimeoutMs: 2_000,
        });
        const guarded = new GuardedRegion(SIZE);
        const receiving = settle(receiver.receive(guarded.dest));
        let client: SocketChannel | undefined;
        try {
          client = await authenticate(receiver.port, await importSecret(SECRET), oneChannelInit(SIZE, PPP));
          // A valid packet first: two data pages (one of them the short last page) and a zero page.
          const good = [pageFill(0, PAGE, 0x11), pageFill(64 * PAGE, SIZE - 64 * PAGE, 0x22)];
          await client.writev([
            dataPacket({ number: 0, normal: [0, 64 * PAGE], zero: [7 * PAGE], regionSize: SIZE, pages: good }),
          ]);
          await writeIgnoringHangup(client, c.packet(1));
          const outcome = await within(receiving, 10_000, "receive");
          assert.equal(outcome.ok, false, "the receive succeeded");
          if (outcome.ok) return;
          const error = outcome.error;
          assert.ok(error instanceof ChannelFailedError, `${error.name}: ${error.message}`);
          assert.equal(error.remote.name, "ProtocolError", error.message);
          assert.ok(error.message.includes("ProtocolError"), error.message);
          assert.ok(error.message.includes(`(${c.field})`), `expected field ${c.field}: ${error.message}`);
          assert.ok(["eof", "reset"].includes(await awaitPeerEnd(client)), "the receiver kept the connection");

          const expected = guarded.initialDest().slice();
          expected.set(good[0], 0);
          expected.set(good[1], 64 * PAGE);
          expected.fill(0, 7 * PAGE, 8 * PAGE);
          assert.equal(guarded.diff(withDest(guarded, expected)), undefined);
        } finally {
          client?.close();
          await receiver.abort();
          await receiving;
          await guarded.close();
        }
      });
    }

    test("an authenticated INIT with an invalid field fails the receive (ProtocolError init.pageSize)", async () => {
      const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 2_000 });
      const guarded = new GuardedRegion(SIZE);
      const receiving = settle(receiver.receive(guarded.dest));
      const client = await openRaw(receiver.port);
      try {
        const init = { ...oneChannelInit(SIZE, PPP), pageSize: 8192 };
        await client.writev([await signedInit(await importSecret(SECRET), await readHello(client), init)]);
        const reply = new Uint8Array(REPLY_BYTES);
        assert.equal(await client.readFull(reply), REPLY_BYTES);
        assert.throws(() => parseReply(reply, ReplyType.INIT_ACK), { name: "TransferRefusedError", code: 5 });
        const outcome = await within(receiving, 10_000, "receive");
        assert.equal(outcome.ok, false);
        if (!outcome.ok) {
          assert.equal(outcome.error.name, "ProtocolError");
          assert.ok(outcome.error.message.includes("(init.pageSize)"), outcome.error.message);
        }
        assert.equal(guarded.diff(), undefined);
      } finally {
        client.close();
        await receiver.abort();
        await receiving;
        await guarded.close();
      }
    });
  });

  describe("a failed transfer leaves fds it no longer owns alone", () => {
    // The main thread owns every channel fd and closes it exactly once, after its Worker
    // stopped; the fd number is then free for the next file this process opens, and nothing
    // of the failed transfer may shut it down or close it again (nor may a Worker started
    // after an abort get it): here a listening socket takes that number.

    test("receiver: a channel failed by a bad packet", async () => {
      const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 5_000 });
      const guarded = new GuardedRegion(SIZE);
      const receiving = settle(receiver.receive(guarded.dest));
      let client: SocketChannel | undefined;
      let probe: Probe | undefined;
      try {
        client = await authenticate(receiver.port, await importSecret(SECRET), oneChannelInit(SIZE, 4));
        await client.writev([
          dataPacket({ number: 0, normal: [0], regionSize: SIZE }),
          header({ type: SYNC, number: 1 }),
        ]);
        assert.equal(await client.readFull(new Uint8Array(REPLY_BYTES)), REPLY_BYTES); // the Worker runs
        const before = socketFds();
        await client.writev([dataPacket({ number: 2, normal: [PAGE], regionSize: SIZE, override: { flags: 1 } })]);
        const outcome = await within(receiving, 10_000, "receive");
        assert.equal(outcome.ok, false);
        const freed = waitForClose(before, 5_000);
        assert.notEqual(freed, -1, "the failed transfer did not close the channel's socket");
        probe = takeFdAsListener(freed);
        await sleep(500); // anything of the failed transfer still running would act now
        assert.ok(probe.open(), `the receiver closed fd ${freed}, which it no longer owned`);
        assert.ok(await probe.listening(), `the receiver shut down fd ${freed}, which it no longer owned`);
      } finally {
        probe?.close();
        client?.close();
        await receiver.abort();
        await receiving;
        await guarded.close();
      }
    });

    test("receiver: abort() while the channel Workers start", async () => {
      const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 5_000 });
      const guarded = new GuardedRegion(SIZE);
      const receiving = settle(receiver.receive(guarded.dest));
      let client: SocketChannel | undefined;
      const probes: Probe[] = [];
      try {
        client = await authenticate(receiver.port, await importSecret(SECRET), oneChannelInit(SIZE, 4));
        // INIT_ACK is sent before the channel Workers start (they take tens of ms): abort now.
        const before = socketFds();
        await receiver.abort();
        const now = socketFds();
        const closed = [...before].filter((fd) => !now.has(fd) && fd !== client!.fd);
        assert.ok(closed.length >= 1, "the abort closed no socket");
        for (const fd of closed) {
          // Another thread of the runtime may take a freed number first: probe those we get.
          try {
            probes.push(takeFdAsListener(fd));
          } catch { /* taken by someone else */ }
        }
        assert.ok(probes.length >= 1, `none of the fds the abort closed (${closed.join(", ")}) could be taken`);
        const outcome = await within(receiving, 10_000, "receive");
        assert.equal(outcome.ok, false);
        if (!outcome.ok) assert.ok(outcome.error instanceof TransferAbortedError, String(outcome.error));
        await sleep(1_000); // time for Workers to start, had they been given the old fds
        for (const probe of probes) {
          assert.ok(probe.open(), `fd ${probe.fd} (closed by the abort, then reused) was closed again`);
          assert.ok(await probe.listening(), `fd ${probe.fd} (closed by the abort, then reused) was shut down`);
        }
        assert.equal(await awaitPeerEnd(client), "eof");
      } finally {
        for (const probe of probes) probe.close();
        client?.close();
        await receiver.abort();
        await guarded.close();
      }
    });

    test("sender: a channel failed by a hostile receiver's reply", async () => {
      const source = Region.allocate(16 * PAGE);
      const listener = await listen({ hostname: "127.0.0.1", port: 0, ioTimeoutMs: 5_000 });
      // A hostile receiver that knows the secret: a valid handshake, then garbage instead of SYNC_ACK.
      const keys = await importSecret(SECRET);
      const serving = (async () => {
        const channel = await listener.accept(5_000);
        const nonce = newNonce();
        await channel.writev([encodeHello(nonce)]);
        const initBytes = new Uint8Array(INIT_BYTES);
        await channel.readFull(initBytes);
        const ack = encodeReply({ type: ReplyType.INIT_ACK, value: 0n, bytes: 0, status: 0 });
        await channel.writev([ack, await signInitAck(keys, transcriptOf(nonce, initBytes), ack)]);
        return channel;
      })();
      let peer: SocketChannel | undefined;
      let probe: Probe | undefined;
      try {
        const sender = await MultifdSender.connect(source, {
          hostname: "127.0.0.1",
          port: listener.port,
          secret: SECRET,
          channels: 1,
          ioTimeoutMs: 5_000,
        });
        peer = await serving;
        const before = socketFds();
        const round = settle(sender.sendRound());
        // The whole round (16 pages) fits in the socket buffers: the Worker then waits for SYNC_ACK.
        await peer.readFull(new Uint8Array(32)); // the round has begun
        await peer.writev([new Uint8Array(REPLY_BYTES).fill(0xee)]);
        const outcome = await within(round, 10_000, "sendRound");
        assert.equal(outcome.ok, false);
        if (!outcome.ok) assert.ok(outcome.error.message.includes("(reply.magic)"), outcome.error.message);
        const freed = waitForClose(before, 5_000);
        assert.notEqual(freed, -1, "the failed transfer did not close the channel's socket");
        probe = takeFdAsListener(freed);
        await sleep(500); // anything of the failed transfer still running would act now
        assert.ok(probe.open(), `the sender closed fd ${freed}, which it no longer owned`);
        assert.ok(await probe.listening(), `the sender shut down fd ${freed}, which it no longer owned`);
      } finally {
        probe?.close();
        peer?.close();
        listener.close();
        await source.close();
      }
    });
  });

  test("mutated packet streams: the receive always settles, and only valid packets write", async () => {
    const seed = (envNumber("HOSTILE_SEED") ?? 0x4e57113) >>> 0;
    const sessions = envNumber("HOSTILE_SESSIONS") ?? 200;
    const lanes = 8; // sessions run 8 at a time (each with its own receiver and guarded region)
    const key = await importSecret(SECRET);
    const tally: Record<string, number> = {};
    const count = (what: string) => (tally[what] = (tally[what] ?? 0) + 1);
    const state = { waitedForReceiverTimeout: false };
    const started = performance.now();
    await Promise.all(Array.from({ length: lanes }, async (_, lane) => {
      const guarded = new GuardedRegion(SIZE, 2, 0x600d + lane);
      try {
        for (let session = lane; session < sessions; session += lanes) {
          await mutatedSession(seed, session, guarded, key, state, count);
        }
      } finally {
        await guarded.close();
      }
    }));
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`mutated streams: ${sessions} sessions (seed ${seed}) in ${seconds} s: ${JSON.stringify(tally)}`);
    assert.ok(state.waitedForReceiverTimeout || sessions < 50, "no session exercised the receiver's own io timeout");
  });
});

/**
 * One session of the mutation run: a raw authenticated client sends a valid stream with a
 * few bytes changed (or cut short); the receive must settle as {@link predict} says, with
 * a typed error, and the allocation must hold exactly what the accepted packets carried.
 */
async function mutatedSession(
  seed: number,
  session: number,
  guarded: GuardedRegion,
  key: SecretKeys,
  state: { waitedForReceiverTimeout: boolean },
  count: (what: string) => void,
): Promise<void> {
  const rng = new Rng((seed + Math.imul(session, 0x9e3779b9)) >>> 0);
  const pagesPerPacket = 1 + rng.int(16);
  const stream = generateStream(rng, SIZE, pagesPerPacket);
  const unchanged = session % 10 === 0; // controls: the valid stream itself
  const { bytes, mutations } = unchanged ? { bytes: stream.bytes, mutations: [] } : mutate(rng, stream);
  const verdictBytes = header({ type: VERDICT, number: stream.packets, argument: rng.int(2) });
  const model = predict(bytes, verdictBytes, SIZE, pagesPerPacket);
  const label = `session ${session} (seed ${seed}): ${JSON.stringify(mutations)} -> ${model.outcome} ${
    model.reason ?? ""
  }`;
  if (unchanged) assert.equal(model.outcome, "resolve", `${label}: the model rejects a valid stream`);

  guarded.reset();
  const receiver = await MultifdReceiver.listen({ secret: SECRET, handshakeTimeoutMs: 2_000, ioTimeoutMs: 1_500 });
  const receiving = settle(receiver.receive(guarded.dest));
  let client: SocketChannel | undefined;
  let seen = "";
  try {
    const authenticated = await authenticateSession(receiver.port, key, oneChannelInit(SIZE, pagesPerPacket), 5_000);
    client = authenticated.channel;
    await writeIgnoringHangup(client, bytes);
    // Take the SYNC_ACKs the receiver sends before it starves (unread bytes would make
    // our close a reset instead of an EOF).
    if (model.starves) await readSyncAcks(client, model.syncAcks);
    if (model.starves && !state.waitedForReceiverTimeout) {
      // Once: leave the receiver waiting for bytes that never come; its ioTimeoutMs ends it.
      state.waitedForReceiverTimeout = true;
      seen = `starved:${await awaitPeerEnd(client)}`;
    } else if (model.starves) {
      // The receiver waits for more bytes: hang up (EOF must end the receive).
      await sleep(5);
      seen = "starved:hung-up";
    } else {
      seen = await readReplies(client, verdictBytes, authenticated.session);
    }
  } finally {
    client?.close();
  }
  const outcome = await within(receiving, 8_000, label);
  await receiver.abort();
  receiver.close();

  // How it settled: as the model predicts, with a typed error.
  if (outcome.ok) {
    assert.equal(model.outcome, "resolve", `${label}: resolved (client saw ${seen})`);
    assert.equal(outcome.value.verified, model.verdict, `${label}: verdict`);
    count("resolved");
  } else {
    const error = outcome.error;
    assert.equal(model.outcome, "reject", `${label}: rejected with ${error.message} (client saw ${seen})`);
    assert.ok(error instanceof ZeroCopyMultifdError, `${label}: untyped ${error.name}: ${error.message}`);
    if (model.reason === "eof") {
      const expected = seen === "starved:eof" ? "TimeoutError" : "ChannelClosedError";
      assert.ok(error.message.includes(expected), `${label}: expected ${expected}: ${error.message}`);
      count(expected === "TimeoutError" ? "rejected: receiver io timeout" : "rejected: EOF (client hung up)");
    } else {
      assert.ok(
        error.message.includes("ProtocolError") && error.message.includes(`(${model.reason})`),
        `${label}: expected ProtocolError (${model.reason}): ${error.message}`,
      );
      count(`rejected: ${model.reason}`);
    }
  }
  if (!model.starves) assert.equal(seen.startsWith("result"), model.result, `${label}: client saw ${seen}`);
  if (model.partial.length > 0) count("partial packet at EOF");

  // What landed: exactly the accepted packets' bytes, in order; nothing else anywhere.
  const expected = guarded.initial.slice();
  for (const w of model.writes) expected.set(w.bytes, guarded.start + w.offset);
  const loose = model.partial.map((w) => ({ at: guarded.start + w.offset, bytes: w.bytes }));
  const difference = guarded.diff(expected, loose);
  assert.equal(difference, undefined, `${label}: ${difference}`);
}

async function readSyncAcks(client: SocketChannel, count: number): Promise<void> {
  const reply = new Uint8Array(REPLY_BYTES);
  for (let i = 0; i < count; i++) {
    assert.equal(await client.readFull(reply), REPLY_BYTES, "SYNC_ACK expected");
    parseReply(reply, ReplyType.SYNC_ACK);
  }
}

/**
 * Reads one reply into `reply`: "reply" when it came whole, "eof" or "reset" when the
 * receiver closed the connection instead. Anything else fails the test: e.g. a TimeoutError,
 * the receiver neither answering nor closing the connection.
 */
async function replyOrEnd(client: SocketChannel, reply: Uint8Array, what: string): Promise<"reply" | "eof" | "reset"> {
  try {
    return (await client.readFull(reply)) === REPLY_BYTES ? "reply" : "eof";
  } catch (error) {
    const e = error as Error & { code?: string };
    if (e.code === "ECONNRESET") return "reset";
    assert.fail(`${what}: the receiver neither answered nor closed the connection: ${e.name}: ${e.message}`);
  }
}

/**
 * Reads replies until RESULT (skipping SYNC_ACKs), then sends the VERDICT. Says what it
 * saw: "result", "result+verdict-refused", "eof", "reset", "timeout", or "reply <type>".
 */
async function readReplies(client: SocketChannel, verdict: Uint8Array, session: SessionKeys): Promise<string> {
  const reply = new Uint8Array(REPLY_BYTES);
  for (;;) {
    let got: number;
    try {
      got = await client.readFull(reply);
    } catch (error) {
      const e = error as Error & { code?: string };
      return e.code === "ECONNRESET" ? "reset" : e.name === "TimeoutError" ? "timeout" : `error ${e.name}`;
    }
    if (got < REPLY_BYTES) return "eof";
    const type = reply[4];
    if (type === ReplyType.SYNC_ACK) continue;
    if (type !== ReplyType.RESULT) return `reply ${type}`;
    return (await answerResult(client, session, reply, verdict)) ? "result" : "result+verdict-refused";
  }
}
