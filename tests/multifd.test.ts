// Multifd transfers over loopback, both ends in this process: byte-exact for every
// channel count, odd sizes, zero pages, zero-copy, several rounds, and > 4 GiB regions.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { InvalidArgumentError, MultifdReceiver, MultifdSender, Region } from "../mod.ts";
import { fillPattern, openTcpSockets, SECRET, transfer } from "./helpers/multifd.ts";
import { sameBytes } from "./helpers/pattern.ts";
import { DEFAULT_PAGES_PER_PACKET } from "../src/multifd/wire.ts";
import { zerocopyFallbackSends } from "../src/multifd/messages.ts";

const PAGE = 4096;
/** A directory on a disk (not tmpfs): files there take page faults rather than a populate per packet. */
const DISK_DIRECTORY = "/var/tmp";

describe("multifd transfers", () => {
  for (const channels of [1, 2, 4, 8]) {
    test(`${channels} channel(s), size not a page or packet multiple, zero-copy ${channels % 2 === 0}`, async () => {
      const size = 48 * 2 ** 20 + 3 * PAGE + 123;
      const zerocopy = channels % 2 === 0;
      const source = Region.allocate(size);
      fillPattern(source, channels);
      const { sent, received, destination } = await transfer(source, { sender: { channels, zerocopy } });
      try {
        assert.equal(sent.verified, true);
        assert.equal(received.verified, true);
        assert.equal(sent.checksum, received.checksum);
        assert.ok(destination.equals(source), "destination differs from source");
        assert.equal(sent.bytes, size);
        assert.equal(received.bytes, size);
        assert.equal(sent.channels, channels);
        assert.equal(received.channels, channels);
        assert.equal(sent.pagesNormal, Math.ceil(size / PAGE));
        assert.equal(sent.rounds, 1);
        assert.equal(received.rounds, 1);
        assert.deepEqual(sent.perChannelBytes, received.perChannelBytes);
        if (zerocopy) {
          assert.ok(sent.zerocopySends > 0);
          assert.equal(sent.zerocopyCopied, sent.zerocopySends, "loopback copies every zero-copy send");
        } else {
          assert.equal(sent.zerocopySends, 0);
        }
      } finally {
        await source.close();
        await destination.close();
      }
    });
  }

  test("zero-copy with a 256 KiB send buffer per channel (sendBufferBytes)", async () => {
    const size = 32 * 2 ** 20 + 5 * PAGE;
    const source = Region.allocate(size);
    fillPattern(source, 9);
    const { sent, received, destination } = await transfer(source, {
      sender: { channels: 4, zerocopy: true, sendBufferBytes: 256 * 1024 },
    });
    try {
      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      assert.ok(destination.equals(source), "destination differs from source");
      assert.ok(sent.zerocopySends > 0);
    } finally {
      await source.close();
      await destination.close();
    }
  });

  test("one page per packet: header buffers small enough to start in the engine's heap", async () => {
    const size = 4 * 2 ** 20 + 17;
    const source = Region.allocate(size);
    fillPattern(source, 3);
    const { sent, received, destination } = await transfer(source, {
      sender: { channels: 2, zerocopy: true, pagesPerPacket: 1 },
    });
    try {
      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      assert.ok(destination.equals(source), "destination differs from source");
      assert.equal(sent.pagesNormal, Math.ceil(size / PAGE));
      assert.ok(sent.packets >= sent.pagesNormal, `${sent.packets} packets for ${sent.pagesNormal} pages`);
    } finally {
      await source.close();
      await destination.close();
    }
  });

  test("a round smaller than a packet per channel is split evenly among the channels", async () => {
    const source = Region.allocate(256 * PAGE + 100); // 257 pages, the last short
    fillPattern(source, 8);
    // Round 1: 257 pages over 4 channels, 65 a packet; round 2: 10 pages, 3 a packet.
    const { sent, received, destination } = await transfer(source, {
      sender: { channels: 4 },
      rounds: [[1, 2, 3, 50, 51, 52, 100, 200, 255, 256]],
    });
    try {
      assert.equal(sent.verified && received.verified, true);
      assert.ok(destination.equals(source), "destination differs from source");
      assert.equal(sent.packets, 4 + 4, "four packets in each round, not one");
      assert.equal(received.packets, sent.packets);
    } finally {
      await source.close();
      await destination.close();
    }
  });

  test("a bad sendBufferBytes is refused before any connection", async () => {
    const source = Region.allocate(PAGE);
    try {
      await assert.rejects(
        MultifdSender.connect(source, { hostname: "127.0.0.1", port: 9, secret: SECRET, sendBufferBytes: 1 }),
        InvalidArgumentError,
      );
    } finally {
      await source.close();
    }
  });

  for (const zeroPages of [false, true, undefined]) {
    const on = zeroPages !== false; // on by default
    const name = zeroPages === undefined ? "by default" : zeroPages ? "on" : "off";
    test(`zero pages ${name}: sent as ${on ? "offsets only" : "data"}`, async () => {
      const size = 16 * 2 ** 20 + 1000;
      const source = Region.allocate(size);
      fillPattern(source, 5);
      // 100 zero pages in the middle, and a zero last (short) page.
      source.view(40 * PAGE, 100 * PAGE).fill(0);
      source.view(size - 1000, 1000).fill(0);
      const { sent, received, destination } = await transfer(source, { sender: { channels: 2, zeroPages } });
      try {
        assert.ok(destination.equals(source));
        assert.equal(sent.verified, true);
        assert.equal(sent.pagesZero, on ? 101 : 0);
        assert.equal(received.pagesZero, on ? 101 : 0);
        assert.equal(sent.pagesNormal + sent.pagesZero, Math.ceil(size / PAGE));
        assert.equal(sent.bytes, on ? size - 100 * PAGE - 1000 : size);
      } finally {
        await source.close();
        await destination.close();
      }
    });
  }

  test("several rounds with pages changed between rounds (zero-copy, zero pages)", async () => {
    const size = 8 * 2 ** 20 + 77;
    const pageCount = Math.ceil(size / PAGE);
    const source = Region.allocate(size);
    fillPattern(source, 9);
    const rounds = [
      [0, 1, 2, 100, pageCount - 1],
      Array.from({ length: 300 }, (_, i) => (i * 7) % pageCount).filter((p, i, a) => a.indexOf(p) === i),
      [5],
    ];
    const { sent, received, destination } = await transfer(source, {
      rounds,
      sender: { channels: 3, zerocopy: true, zeroPages: true },
    });
    try {
      assert.ok(destination.equals(source), "final destination differs from the final source");
      assert.equal(sent.rounds, 4);
      assert.equal(received.rounds, 4);
      assert.equal(sent.verified, true);
      const resent = rounds.reduce((n, r) => n + r.length, 0);
      assert.equal(sent.pagesNormal + sent.pagesZero, pageCount + resent);
    } finally {
      await source.close();
      await destination.close();
    }
  });

  test("a region above 4 GiB (sparse, every byte verified)", async () => {
    const size = 2 ** 32 + 5 * PAGE + 333;
    const source = Region.allocate(size);
    const markers = [0, 2 ** 31, 2 ** 32 - 3, 2 ** 32 + PAGE + 1, size - 1];
    markers.forEach((offset, i) =>
      source.write(offset, new Uint8Array([i + 1, 0xab, 0xcd].slice(0, Math.min(3, size - offset))))
    );
    const { sent, received, destination } = await transfer(source, { sender: { channels: 4, zeroPages: true } });
    try {
      assert.equal(sent.verified, true);
      assert.equal(received.verified, true);
      for (const offset of markers) assert.equal(destination.view(offset, 1)[0], source.view(offset, 1)[0]);
      assert.ok(destination.equals(source), "some byte differs");
      assert.equal(sent.pagesNormal + sent.pagesZero, Math.ceil(size / PAGE));
      assert.ok(sent.pagesZero > 1_000_000, "untouched pages went as zero pages");
    } finally {
      await source.close();
      await destination.close();
    }
  });

  test("a SharedArrayBuffer source into a file destination; closing waits for the transfer", async () => {
    const shared = new SharedArrayBuffer(3 * 2 ** 20 + 5);
    const source = Region.fromSharedArrayBuffer(shared);
    fillPattern(source, 21);
    const path = join(mkdtempSync(join(tmpdir(), "zcmf-")), "received.img");
    const receiver = await MultifdReceiver.listen({ secret: SECRET });
    const receiving = receiver.receive((size) => Region.createFile(path, size));
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port: receiver.port,
      secret: SECRET,
      channels: 2,
      zerocopy: true,
    });
    let closed = false;
    const closing = source.close().then(() => (closed = true));
    await sender.sendRound();
    assert.equal(closed, false, "the region closed while the transfer still used it");
    const sent = await sender.finish();
    const received = await receiving;
    await closing;
    assert.equal(sent.verified && received.verified, true);
    assert.ok(sameBytes(new Uint8Array(readFileSync(path)), new Uint8Array(shared)), "file differs from the source");
    rmSync(dirname(path), { recursive: true });
  });

  test("zero-copy on loopback: each channel drops the flag once the kernel copied its first 32 MiB; zerocopyFallback: false keeps it", async () => {
    const size = 160 * 2 ** 20;
    const source = Region.allocate(size);
    fillPattern(source, 5);
    const packets = size / (DEFAULT_PAGES_PER_PACKET * PAGE);
    const judged = zerocopyFallbackSends(DEFAULT_PAGES_PER_PACKET * PAGE);
    for (const zerocopyFallback of [true, false]) {
      const { sent, destination } = await transfer(source, {
        sender: { channels: 2, zerocopy: true, zerocopyFallback },
      });
      try {
        assert.equal(sent.verified, true);
        assert.ok(destination.equals(source));
        assert.equal(sent.zerocopyCopied, sent.zerocopySends, "loopback copies every zero-copy send");
        if (zerocopyFallback) {
          assert.equal(sent.zerocopyFallbacks, 2, "both channels fell back");
          assert.ok(
            sent.zerocopySends >= 2 * judged,
            `judged on ${judged} completions per channel (${sent.zerocopySends} sends)`,
          );
          assert.ok(sent.zerocopySends < packets, `then sent without the flag (${sent.zerocopySends} of ${packets})`);
        } else {
          assert.equal(sent.zerocopyFallbacks, 0);
          assert.ok(sent.zerocopySends >= packets, `every packet's pages zero-copy (${sent.zerocopySends} sends)`);
        }
      } finally {
        await destination.close();
      }
    }
    await source.close();
  });

  test("a file on a disk created to receive: rounds of scattered pages, pages that became zero, odd size", async () => {
    const size = 5 * 2 ** 20 + 7 * PAGE + 99;
    const lastPage = Math.floor(size / PAGE);
    const source = Region.allocate(size);
    fillPattern(source, 33);
    source.view(PAGE * 40, PAGE * 3).fill(0); // zero pages in the first round
    const path = join(mkdtempSync(join(DISK_DIRECTORY, "zcmf-")), "received.img");
    const destination = Region.createFile(path, size);
    assert.equal(destination.descriptor.populate, false, `${DISK_DIRECTORY} is on a disk`);
    const receiver = await MultifdReceiver.listen({ secret: SECRET });
    const receiving = receiver.receive(destination);
    const sender = await MultifdSender.connect(source, {
      hostname: "127.0.0.1",
      port: receiver.port,
      secret: SECRET,
      channels: 3,
      zeroPages: true,
    });
    try {
      await sender.sendRound();
      // Round 2: scattered pages (not contiguous, not in order, the short last page), and
      // pages written in round 1 that are zero now.
      const dirty = [lastPage, 7, 3, 1000, 2, 41, 640, 641, 642, 1279];
      dirty.forEach((page, i) => source.view(page * PAGE, Math.min(PAGE, size - page * PAGE)).fill(i + 1));
      const zeroed = [5, 6, 900];
      for (const page of zeroed) source.view(page * PAGE, PAGE).fill(0);
      await sender.sendRound(new Uint32Array([...dirty, ...zeroed]));
      const sent = await sender.finish();
      const received = await receiving;
      assert.equal(sent.verified && received.verified, true);
      assert.ok(sent.pagesZero >= 3 + zeroed.length, "zero pages went as zero pages");
      assert.ok(destination.equals(source), "the mapping differs from the source");
      assert.ok(sameBytes(new Uint8Array(readFileSync(path)), source.view()), "the file differs from the source");
    } finally {
      await source.close();
      await destination.close();
      rmSync(dirname(path), { recursive: true });
    }
  });

  test("no socket is left open after transfers", async () => {
    const before = openTcpSockets();
    for (let i = 0; i < 3; i++) {
      const source = Region.allocate(1 << 20);
      fillPattern(source, i);
      const { destination } = await transfer(source, { sender: { channels: 2, zerocopy: i % 2 === 1 } });
      await source.close();
      await destination.close();
    }
    assert.equal(openTcpSockets(), before);
  });
});
