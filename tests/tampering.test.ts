// An attacker on the path who lets the handshake through: it cannot turn the end of a
// transfer into "verified" when the data was altered, nor forge the checksum exchange; a
// packet it drops, repeats or reorders fails the transfer at once, with typed errors. A
// proxy between a real sender and a real receiver changes one byte at a chosen point of one
// direction: in page data (the keyed checksums then differ: verified false on both sides),
// in the receiver's RESULT (the sender fails with AuthenticationError), in the sender's
// VERDICT (the receiver fails with AuthenticationError; the sender rightly reports verified:
// the receiver had proven it holds what was sent). Plus: the checksum is keyed per session
// (the same bytes give another checksum in every session). Encrypted channels: one bit
// changed in any record of either direction, or a packet dropped, repeated, reordered or
// moved to another channel, fails the side that reads it with AuthenticationError naming the
// record, and the other side with a typed error; never "verified". A whole recorded channel
// replayed to a new receiver is refused at its INIT.
import { describe, test } from "node:test";
import { concatBytes } from "../util/bytes.ts";
import assert from "node:assert/strict";
import net from "node:net";
import {
  AuthenticationError,
  ChannelFailedError,
  MultifdReceiver,
  MultifdSender,
  Region,
  ZeroCopyMultifdError,
} from "../mod.ts";
import {
  HELLO_BYTES,
  INIT_ACK_BYTES,
  INIT_BYTES,
  OFFSET_BYTES,
  PACKET_HEADER_BYTES,
  PAGE_SIZE,
  REPLY_BYTES,
} from "../src/multifd/wire.ts";
import { CHECKSUM_BYTES } from "../src/multifd/checksum.ts";
import { fillPattern, SECRET, transfer } from "./helpers/multifd.ts";
import { awaitPeerEnd, openRaw, readHello, writeIgnoringHangup } from "./helpers/hostile_client.ts";

const PAGES_PER_PACKET = 16;
const SIZE = 64 * PAGE_SIZE; // 4 packets
const PACKETS = SIZE / PAGE_SIZE / PAGES_PER_PACKET;

type Direction = "toReceiver" | "toSender";

/**
 * What the proxy does to one direction's stream: the bytes in [start, end) are held until
 * all have passed, then `rewrite(held)` goes on in their place.
 */
interface Edit {
  direction: Direction;
  start: number;
  end: number;
  rewrite: (held: Uint8Array) => Uint8Array;
}

/** One byte at `offset` changed. */
const flip = (direction: Direction, offset: number): Edit => ({
  direction,
  start: offset,
  end: offset + 1,
  rewrite: (held) => Uint8Array.of(held[0] ^ 0x20),
});

/** A TCP proxy to `port` that applies `edit` (on every connection: here there is one channel). */
async function tamperingProxy(port: number, edit: Edit) {
  const sockets = new Set<net.Socket>();
  /** What the sender sent, as it sent it (before the edit). */
  const fromSender: Uint8Array[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => sockets.delete(s));
    }
    const pipe = (from: net.Socket, to: net.Socket, direction: Direction) => {
      let seen = 0;
      const held: Uint8Array[] = [];
      const send = (bytes: Uint8Array) => bytes.length > 0 && to.write(bytes);
      from.on("data", (chunk: Uint8Array) => {
        const bytes = new Uint8Array(chunk);
        if (direction === "toReceiver") fromSender.push(bytes.slice());
        const from = seen;
        seen += bytes.length;
        if (direction !== edit.direction || seen <= edit.start || from >= edit.end) return send(bytes);
        const a = Math.max(0, edit.start - from), b = Math.min(bytes.length, edit.end - from);
        send(bytes.subarray(0, a));
        held.push(bytes.slice(a, b));
        if (from + b === edit.end) send(edit.rewrite(concatBytes(...held)));
        send(bytes.subarray(b));
      });
      from.on("end", () => to.end());
      from.on("close", () => to.destroy());
    };
    pipe(client, upstream, "toReceiver");
    pipe(upstream, client, "toSender");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    recorded: () => concatBytes(...fromSender),
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

type Outcome = { ok: true; verified: boolean } | { ok: false; error: Error };
const settle = (p: Promise<{ verified: boolean }>): Promise<Outcome> =>
  p.then((r) => ({ ok: true as const, verified: r.verified }), (error) => ({ ok: false as const, error }));

/** One round and the end, from `source` to `port` (a proxy), with the tests' packet size and limits. */
function sendTo(port: number, source: Region, channels: number, encrypt: boolean): Promise<Outcome> {
  return settle((async () => {
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port,
      secret: SECRET,
      channels,
      pagesPerPacket: PAGES_PER_PACKET,
      ioTimeoutMs: 5_000,
      encrypt,
    });
    try {
      await sender.sendRound();
      return await sender.finish();
    } catch (error) {
      await sender.abort();
      throw error;
    }
  })());
}

/** One 1-channel transfer through a proxy that applies `edit`, with plain or encrypted packets. */
async function throughProxy(edit: Edit, encrypt: boolean = false) {
  const source = Region.allocate(SIZE);
  fillPattern(source, 77);
  const destination = Region.allocate(SIZE);
  const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 5_000 });
  const receiving = settle(receiver.receive(destination));
  const proxy = await tamperingProxy(receiver.port, edit);
  try {
    const [sent, received] = await Promise.all([sendTo(proxy.port, source, 1, encrypt), receiving]);
    return { sent, received, recorded: proxy.recorded() };
  } finally {
    await receiver.abort();
    await proxy.close();
    await source.close();
    await destination.close();
  }
}

// Byte offsets of the one channel's streams (docs/PROTOCOL.md).
const DATA_PACKET_BYTES = PACKET_HEADER_BYTES + PAGES_PER_PACKET * (OFFSET_BYTES + PAGE_SIZE);
const toReceiver = {
  firstPage: INIT_BYTES + PACKET_HEADER_BYTES + PAGES_PER_PACKET * OFFSET_BYTES,
  // INIT, the packets, SYNC, END, then VERDICT ‖ MAC.
  verdict: INIT_BYTES + PACKETS * DATA_PACKET_BYTES + 2 * PACKET_HEADER_BYTES,
};
// HELLO, INIT_ACK ‖ MAC, one SYNC_ACK, then RESULT (reply ‖ checksum) ‖ MAC.
const result = HELLO_BYTES + INIT_ACK_BYTES + REPLY_BYTES;

describe("an attacker on the path (plain mode)", () => {
  test("untouched, through the proxy: verified on both sides (the proxy itself is transparent)", async () => {
    const { sent, received } = await throughProxy(flip("toSender", Number.MAX_SAFE_INTEGER));
    assert.deepEqual([sent, received], [{ ok: true, verified: true }, { ok: true, verified: true }]);
  });

  const cases: { name: string; direction: Direction; offset: number; expect: "mismatch" | "sender" | "receiver" }[] = [
    { name: "a byte of page data", direction: "toReceiver", offset: toReceiver.firstPage + 100, expect: "mismatch" },
    { name: "the RESULT's byte count", direction: "toSender", offset: result + 23, expect: "sender" },
    { name: "the RESULT's checksum", direction: "toSender", offset: result + REPLY_BYTES + 5, expect: "sender" },
    {
      name: "the RESULT's MAC",
      direction: "toSender",
      offset: result + REPLY_BYTES + CHECKSUM_BYTES + 9,
      expect: "sender",
    },
    {
      name: "the VERDICT's MAC",
      direction: "toReceiver",
      offset: toReceiver.verdict + PACKET_HEADER_BYTES + 3,
      expect: "receiver",
    },
  ];
  for (const c of cases) {
    test(`one byte changed in ${c.name}: never verified, ${c.expect === "mismatch" ? "a mismatch on both sides" : `AuthenticationError on the ${c.expect}'s side`}`, async () => {
      const { sent, received } = await throughProxy(flip(c.direction, c.offset));
      // The sender's "verified" says the receiver proved (authenticated RESULT) that it holds
      // what was sent; a forged VERDICT cannot change that, only what the receiver learns.
      const trusted = c.expect === "receiver" ? [received] : [sent, received];
      for (const outcome of trusted) assert.ok(!outcome.ok || !outcome.verified, JSON.stringify(outcome));
      if (c.expect === "receiver") assert.deepEqual(sent, { ok: true, verified: true });
      if (c.expect === "mismatch") {
        assert.deepEqual([sent, received], [{ ok: true, verified: false }, { ok: true, verified: false }]);
        return;
      }
      const failed = c.expect === "sender" ? sent : received;
      assert.equal(failed.ok, false);
      if (!failed.ok) {
        assert.ok(failed.error instanceof AuthenticationError, `${failed.error.name}: ${failed.error.message}`);
      }
    });
  }

  // Packets dropped, repeated or reordered on the way: the receiver's per-channel packet
  // numbers catch each at once (plain mode has no MAC per packet; an attacker who also
  // renumbers is caught at the end instead, as `verified: false`).
  const packet = (k: number) => INIT_BYTES + k * DATA_PACKET_BYTES;
  const packetEdits: { name: string; edit: Edit }[] = [
    {
      name: "a packet dropped",
      edit: { direction: "toReceiver", start: packet(1), end: packet(2), rewrite: () => new Uint8Array(0) },
    },
    {
      name: "a packet sent twice",
      edit: { direction: "toReceiver", start: packet(1), end: packet(2), rewrite: (held) => concatBytes(held, held) },
    },
    {
      name: "two packets swapped",
      edit: {
        direction: "toReceiver",
        start: packet(1),
        end: packet(3),
        rewrite: (held) => concatBytes(held.subarray(DATA_PACKET_BYTES), held.subarray(0, DATA_PACKET_BYTES)),
      },
    },
  ];
  for (const { name, edit } of packetEdits) {
    test(`${name}: typed errors on both sides, the receiver's names packet.number`, async () => {
      const { sent, received } = await throughProxy(edit);
      for (const [side, outcome] of [["sender", sent], ["receiver", received]] as const) {
        assert.equal(outcome.ok, false, `${side}: ${JSON.stringify(outcome)}`);
        if (!outcome.ok) assert.ok(outcome.error instanceof ZeroCopyMultifdError, `${side}: ${outcome.error}`);
      }
      if (!received.ok) assert.match(received.error.message, /packet\.number/);
    });
  }

  test("the checksum is keyed per session: the same region gives another checksum in each session", async () => {
    const checksums = new Set<string>();
    const source = Region.allocate(SIZE);
    fillPattern(source, 77);
    for (let i = 0; i < 3; i++) {
      const { sent, received, destination } = await transfer(source);
      assert.equal(sent.checksum, received.checksum);
      assert.match(sent.checksum, /^[0-9a-f]{64}$/);
      checksums.add(sent.checksum);
      await destination.close();
    }
    await source.close();
    assert.equal(checksums.size, 3);
  });
});

// Encrypted: every packet and reply is sealed, with the next nonce of its direction. Byte
// offsets of the one channel's sealed streams (docs/PROTOCOL.md "Encrypted channels"): a
// data packet of 16 contiguous pages is a sealed header (48), sealed offsets (16 × 8 + 16),
// then its 64 KiB of pages as one message with its tag.
const SEALED_HEADER = PACKET_HEADER_BYTES + 16;
const SEALED_PACKET_BYTES = SEALED_HEADER + PAGES_PER_PACKET * OFFSET_BYTES + 16 + PAGES_PER_PACKET * PAGE_SIZE + 16;
const sealed = {
  packet: (k: number) => INIT_BYTES + k * SEALED_PACKET_BYTES,
  sync: INIT_BYTES + PACKETS * SEALED_PACKET_BYTES,
  // SYNC, END, then VERDICT ‖ MAC.
  verdict: INIT_BYTES + PACKETS * SEALED_PACKET_BYTES + 2 * SEALED_HEADER,
  syncAck: HELLO_BYTES + INIT_ACK_BYTES,
  result: HELLO_BYTES + INIT_ACK_BYTES + REPLY_BYTES + 16,
};

/** The error's class name, also for a channel Worker's (ChannelFailedError carries it as `remote`). */
function errorName(error: Error): string {
  return error instanceof ChannelFailedError ? error.remote.name : error.name;
}

describe("an attacker on the path (encrypted)", () => {
  test("untouched, through the proxy: verified on both sides; no page of the region is on the wire", async () => {
    const { sent, received } = await throughProxy(flip("toSender", Number.MAX_SAFE_INTEGER), true);
    assert.deepEqual([sent, received], [{ ok: true, verified: true }, { ok: true, verified: true }]);
  });

  // `what`: the record the receiving side names in its AuthenticationError, which proves
  // that the edit hit the record the offsets above say it did.
  const edits: { name: string; edit: Edit; forged: "receiver" | "sender"; what: RegExp }[] = [
    { name: "a bit of a header", edit: flip("toReceiver", sealed.packet(1) + 5), forged: "receiver", what: /header/ },
    {
      name: "a bit of the offsets",
      edit: flip("toReceiver", sealed.packet(0) + SEALED_HEADER + 7),
      forged: "receiver",
      what: /offsets/,
    },
    {
      name: "a bit of page data",
      edit: flip("toReceiver", sealed.packet(2) + SEALED_HEADER + 200 + 3000),
      forged: "receiver",
      what: /page data/,
    },
    { name: "a bit of a tag", edit: flip("toReceiver", sealed.packet(1) - 1), forged: "receiver", what: /page data/ },
    { name: "a bit of the SYNC", edit: flip("toReceiver", sealed.sync + 20), forged: "receiver", what: /header/ },
    { name: "a bit of the SYNC_ACK", edit: flip("toSender", sealed.syncAck + 9), forged: "sender", what: /SYNC_ACK/ },
    { name: "a bit of the RESULT", edit: flip("toSender", sealed.result + 40), forged: "sender", what: /RESULT/ },
    ...[
      { name: "a packet dropped", rewrite: () => new Uint8Array(0) },
      { name: "a packet sent twice", rewrite: (held: Uint8Array) => concatBytes(held, held) },
    ].map(({ name, rewrite }) => ({
      name,
      edit: { direction: "toReceiver" as const, start: sealed.packet(1), end: sealed.packet(2), rewrite },
      forged: "receiver" as const,
      what: /header/,
    })),
    {
      name: "two packets swapped",
      edit: {
        direction: "toReceiver",
        start: sealed.packet(1),
        end: sealed.packet(3),
        rewrite: (held) => concatBytes(held.subarray(SEALED_PACKET_BYTES), held.subarray(0, SEALED_PACKET_BYTES)),
      },
      forged: "receiver",
      what: /header/,
    },
  ];
  for (const { name, edit, forged, what } of edits) {
    test(`${name}: AuthenticationError on the ${forged}'s side, a typed error on the other, never verified`, async () => {
      const { sent, received } = await throughProxy(edit, true);
      for (const [side, outcome] of [["sender", sent], ["receiver", received]] as const) {
        assert.equal(outcome.ok, false, `${side}: ${JSON.stringify(outcome)}`);
        if (!outcome.ok) assert.ok(outcome.error instanceof ZeroCopyMultifdError, `${side}: ${outcome.error}`);
      }
      const victim = forged === "sender" ? sent : received;
      if (!victim.ok) {
        assert.equal(errorName(victim.error), "AuthenticationError", victim.error.message);
        assert.match(victim.error.message, what);
      }
    });
  }

  test("a whole channel recorded and replayed to a new receiver: refused at INIT, nothing lands", async () => {
    const { sent, recorded } = await throughProxy(flip("toSender", Number.MAX_SAFE_INTEGER), true);
    assert.deepEqual(sent, { ok: true, verified: true });
    const receiver = await MultifdReceiver.listen({ secret: SECRET });
    const destination = Region.allocate(SIZE);
    const receiving = settle(receiver.receive(destination));
    try {
      const replay = await openRaw(receiver.port);
      await readHello(replay);
      // Its INIT was signed for the old receiver's nonce: the new receiver closes at once.
      await writeIgnoringHangup(replay, recorded);
      assert.match(await awaitPeerEnd(replay), /^(eof|reset)$/);
      replay.close();
    } finally {
      await receiver.abort();
    }
    const outcome = await receiving;
    assert.equal(outcome.ok, false);
    assert.equal(destination.view().some((b) => b !== 0), false, "nothing of the replay landed");
    await destination.close();
  });

  test("a packet moved from channel 0 to channel 1 (2 channels): channel 1 cannot open it, AuthenticationError", async () => {
    // A proxy that learns each connection's channel from its INIT (bytes 24..25), keeps
    // channel 0's first sealed data packet, and puts it on channel 1 in place of channel 1's
    // own first one (same size: both carry 16 full pages).
    const source = Region.allocate(32 * PAGES_PER_PACKET * PAGE_SIZE);
    fillPattern(source, 78);
    const destination = Region.allocate(source.size);
    const receiver = await MultifdReceiver.listen({ secret: SECRET, ioTimeoutMs: 5_000 });
    const receiving = settle(receiver.receive(destination));
    const first = { start: INIT_BYTES, end: INIT_BYTES + SEALED_PACKET_BYTES };
    let channel0Packet: ((bytes: Uint8Array) => void) | undefined;
    const channel0 = new Promise<Uint8Array>((resolve) => (channel0Packet = resolve));
    const sockets = new Set<net.Socket>();
    const server = net.createServer((client) => {
      const upstream = net.connect(receiver.port, "127.0.0.1");
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on("error", () => {});
      }
      upstream.pipe(client);
      // A close passes on as a close: the receiver's abort resets its connections, and a
      // reset ends no pipe, so without this the sender would wait out its I/O timeout.
      upstream.on("close", () => client.destroy());
      client.on("close", () => upstream.destroy());
      let seen = new Uint8Array(0);
      let forwarded = 0;
      let spliced = false;
      client.on("data", async (chunk: Uint8Array) => {
        client.pause();
        seen = concatBytes(seen, new Uint8Array(chunk));
        const channelId = seen.length >= 26 ? new DataView(seen.buffer).getUint16(24) : -1;
        if (channelId === 0 && seen.length >= first.end) channel0Packet!(seen.slice(first.start, first.end));
        let upTo = seen.length;
        if (channelId !== 0 && !spliced) {
          if (seen.length < first.end) upTo = Math.min(upTo, first.start);
          else {
            // Channel 1's first packet is swapped for channel 0's.
            upstream.write(seen.subarray(forwarded, first.start));
            upstream.write(await channel0);
            forwarded = first.end;
            spliced = true;
          }
        }
        if (upTo > forwarded) upstream.write(seen.subarray(forwarded, upTo));
        forwarded = Math.max(forwarded, upTo);
        client.resume();
      });
      client.on("end", () => upstream.end());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const sent = await sendTo((server.address() as net.AddressInfo).port, source, 2, true);
      const received = await receiving;
      assert.equal(sent.ok, false, JSON.stringify(sent));
      assert.equal(received.ok, false, JSON.stringify(received));
      if (!received.ok) {
        assert.equal(errorName(received.error), "AuthenticationError", received.error.message);
        assert.match(received.error.message, /page data|header|offsets/);
      }
    } finally {
      await receiver.abort();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await source.close();
      await destination.close();
    }
  });

  test("a bit of the VERDICT: the receiver fails with AuthenticationError, never verified", async () => {
    const { sent, received } = await throughProxy(flip("toReceiver", sealed.verdict + 5), true);
    assert.equal(received.ok, false);
    if (!received.ok) {
      assert.equal(errorName(received.error), "AuthenticationError", received.error.message);
      assert.match(received.error.message, /header/);
    }
    // The sender had its proof already: the receiver's authenticated RESULT matched.
    assert.deepEqual(sent, { ok: true, verified: true });
  });
});
