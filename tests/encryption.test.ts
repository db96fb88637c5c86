// Encrypted channels (`encrypt`): every byte after the handshake sealed, both ciphers, with
// and without zero-copy, zero pages and rounds of dirty pages; the receiver can insist on
// encryption; nothing of the region travels in the clear.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError, MultifdReceiver, MultifdSender, Region, TransferRefusedError } from "../mod.ts";
import { fillPattern, SECRET, transfer } from "./helpers/multifd.ts";

const SIZE = 3 * 1024 * 1024 + 4096 + 100; // a short last page

for (const cipher of ["aegis-128l", "aes-256-gcm"] as const) {
  describe(`encrypted channels, ${cipher}`, () => {
    for (const zerocopy of [false, true]) {
      test(`4 channels${zerocopy ? ", zero-copy (no fallback)" : ""}, zero pages, two dirty rounds: verified, byte-identical`, async () => {
        const source = Region.allocate(SIZE);
        fillPattern(source, 5);
        source.view(4096 * 10, 4096 * 20).fill(0); // zero pages
        const { sent, received, destination } = await transfer(source, {
          sender: {
            channels: 4,
            encrypt: cipher,
            zeroPages: true,
            zerocopy,
            zerocopyFallback: false,
            pagesPerPacket: 32,
          },
          rounds: [[1, 2, 3, 700], [0, 768]],
        });
        assert.equal(sent.verified, true);
        assert.equal(received.verified, true);
        assert.equal(sent.encryption, cipher);
        assert.equal(received.encryption, cipher);
        assert.ok(sent.pagesZero > 0);
        if (zerocopy) assert.ok(sent.zerocopySends > 0);
        assert.ok(destination.equals(source));
        await destination.close();
        await source.close();
      });
    }
  });
}

describe("encrypted zero-copy: the staging ring", () => {
  test("one channel, 512 small packets with MSG_ZEROCOPY on every one: each slot is reused only after its completion", async () => {
    // 8 slots per channel: each is reused 64 times. Were a slot refilled before the kernel
    // had sent it, the receiver would open another packet's bytes: AuthenticationError.
    const source = Region.allocate(512 * 4 * 4096);
    fillPattern(source, 11);
    const { sent, received, destination } = await transfer(source, {
      sender: { channels: 1, encrypt: true, zerocopy: true, zerocopyFallback: false, pagesPerPacket: 4 },
      rounds: [[5, 6, 7]],
    });
    assert.equal(sent.verified && received.verified, true);
    assert.equal(sent.zerocopyFallbacks, 0);
    assert.ok(sent.zerocopySends >= 512, `${sent.zerocopySends} zero-copy sends`);
    assert.ok(destination.equals(source));
    await destination.close();
    await source.close();
  });
});

describe("encryption options", () => {
  test("a receiver with encrypt: true refuses a plain sender: TransferRefusedError on both sides", async () => {
    const source = Region.allocate(64 * 1024);
    const receiver = await MultifdReceiver.listen({ secret: SECRET, encrypt: true });
    const destination = Region.allocate(source.size);
    const receiving = receiver.receive(destination);
    receiving.catch(() => {}); // asserted below, once the sender has been refused
    const refused = (error: Error) =>
      error instanceof TransferRefusedError && /encrypted channels only/.test(error.message);
    await assert.rejects(
      MultifdSender.connect(source, { hostname: "127.0.0.1", port: receiver.port, secret: SECRET, channels: 2 }),
      refused,
    );
    await assert.rejects(receiving, refused);
    await destination.close();
    await source.close();
  });

  test("a receiver with encrypt: true accepts an encrypted sender", async () => {
    const source = Region.allocate(64 * 1024);
    fillPattern(source, 9);
    const { sent, received, destination } = await transfer(source, {
      receiver: { encrypt: true },
      sender: { encrypt: true },
    });
    assert.equal(sent.verified && received.verified, true);
    assert.equal(received.encryption, "aegis-128l");
    await destination.close();
    await source.close();
  });

  test("an unknown cipher is refused before anything connects", async () => {
    const source = Region.allocate(4096);
    await assert.rejects(
      MultifdSender.connect(source, {
        hostname: "127.0.0.1",
        port: 9,
        secret: SECRET,
        encrypt: "rot13" as unknown as true,
      }),
      InvalidArgumentError,
    );
    await source.close();
  });
});
