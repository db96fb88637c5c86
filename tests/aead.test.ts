// The AEAD layer of encrypted channels (aead.ts, zig/aead.zig) against independent
// implementations: AEGIS-128L's published test vector, AES-256-GCM and HKDF from
// node:crypto (OpenSSL); the key schedule of docs/PROTOCOL.md ("Encrypted channels"):
// traffic keys per channel and direction, epoch keys, nonces that never repeat; and the
// framing of a sealed packet, byte for byte.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createDecipheriv, hkdfSync } from "node:crypto";
import { addressOf, keepAlive, native } from "../ffi/mod.ts";
import { EncryptionLimitError, PAGE_SIZE, Region } from "../mod.ts";
import {
  CIPHER_IDS,
  MAX_MESSAGE_BYTES,
  MAX_MESSAGES,
  MessageList,
  MESSAGES_PER_KEY,
  SealingDirection,
  TAG_BYTES,
} from "../src/multifd/aead.ts";
import {
  channelEncryption,
  importSecret,
  KEY_SALT,
  newNonce,
  trafficKeys,
  type Transcript,
} from "../src/multifd/auth.ts";
import { sealedFormat } from "../src/multifd/sealed_codec.ts";
import { encodeInitFields, PACKET_HEADER_BYTES } from "../src/multifd/wire.ts";
import { fillPattern } from "./helpers/multifd.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** Seals one message with a raw nonce number, straight through the native call. */
function sealRaw(cipher: number, key: Uint8Array, nonce: number, plain: Uint8Array): Uint8Array {
  const list = new MessageList(1);
  list.push(addressOf(plain), plain.length);
  const out = new Uint8Array(plain.length + TAG_BYTES);
  assert.equal(native.zc_seal(cipher, key, nonce, list.words, list.count, addressOf(out)), out.length);
  return out;
}

/** The key of epoch `epoch` under `trafficKey`, by node:crypto: HKDF(traffic key, salt, "epoch " ‖ u64 BE). */
function epochKey(trafficKey: Uint8Array, epoch: number): Uint8Array {
  const info = Buffer.alloc(14);
  info.write("epoch ");
  info.writeBigUInt64BE(BigInt(epoch), 6);
  return new Uint8Array(hkdfSync("sha256", trafficKey, KEY_SALT, info, 32));
}

/** Opens AES-256-GCM with node:crypto: nonce = u64 LE number ‖ 4 zero bytes. */
function gcmOpen(key: Uint8Array, nonce: number, sealed: Uint8Array): Uint8Array {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64LE(BigInt(nonce));
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  return new Uint8Array(
    Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)), decipher.final()]),
  );
}

describe("ciphers: known answers", () => {
  test("AEGIS-128L: the CFRG draft's test vector 1 (key 10 01 00…, nonce 10 00 02 00…, 16 zero bytes)", () => {
    const key = new Uint8Array(32);
    key.set([0x10, 0x01]);
    // The nonce 10 00 02 00 00… is message number 0x00020010 (u64 little-endian, zero-padded).
    const sealed = sealRaw(CIPHER_IDS["aegis-128l"], key, 0x00020010, new Uint8Array(16));
    assert.equal(hex(sealed.subarray(0, 16)), "c1c0e58bd913006feba00f4b3cc3594e");
    assert.equal(hex(sealed.subarray(16)), "abe0ece80c24868a226a35d16bdae37a");
  });

  test("AES-256-GCM: what we seal, OpenSSL opens (several lengths, nonces)", () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i * 3);
    for (const [length, nonce] of [[0, 0], [1, 1], [31, 2 ** 32 + 5], [4096, 7], [MAX_MESSAGE_BYTES, 2 ** 52]]) {
      const plain = Uint8Array.from({ length }, (_, i) => (i * 31 + length) & 0xff);
      const sealed = sealRaw(CIPHER_IDS["aes-256-gcm"], key, nonce, plain);
      assert.deepEqual(gcmOpen(key, nonce, sealed), plain, `length ${length}`);
    }
  });

  test("an unknown cipher id is refused by the native call", () => {
    const list = new MessageList(1);
    assert.equal(native.zc_seal(3, new Uint8Array(32), 0, list.words, 0, 0), -22);
  });

  test("HKDF-SHA-256 (zig) equals node:crypto's", () => {
    const out = new Uint8Array(42);
    const ikm = new Uint8Array(22).fill(0x0b), salt = Uint8Array.from({ length: 13 }, (_, i) => i);
    const info = Uint8Array.from({ length: 10 }, (_, i) => 0xf0 + i);
    assert.equal(native.zc_hkdf_sha256(ikm, 22, salt, 13, info, 10, out, 42), 0);
    // RFC 5869, test case 1.
    assert.equal(
      hex(out),
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
  });
});

describe("key schedule and nonces", () => {
  const transcript = (): Transcript => ({
    receiverNonce: newNonce(),
    senderNonce: newNonce(),
    init: encodeInitFields({
      sessionId: new Uint8Array(16),
      channelId: 0,
      channelCount: 1,
      pageSize: PAGE_SIZE,
      regionSize: PAGE_SIZE,
      pagesPerPacket: 4,
      cipher: 2,
      checksum: 0,
    }),
  });

  test("traffic keys: HKDF(secret, salt, 'traffic, <direction>' ‖ transcript), one per direction, channel and session", async () => {
    const secret = "correct horse battery staple";
    const keys = await importSecret(secret);
    const t = transcript();
    const info = (label: string) => Buffer.concat([Buffer.from(label), t.receiverNonce, t.senderNonce, t.init]);
    const traffic = await trafficKeys(keys, t);
    assert.deepEqual(
      traffic.toReceiver,
      new Uint8Array(hkdfSync("sha256", secret, KEY_SALT, info("traffic, sender to receiver"), 32)),
    );
    assert.deepEqual(
      traffic.toSender,
      new Uint8Array(hkdfSync("sha256", secret, KEY_SALT, info("traffic, receiver to sender"), 32)),
    );
    // Sixteen channels of one session: 32 distinct keys, and each end's outbound key is the other's inbound.
    const transcripts = Array.from({ length: 16 }, transcript);
    const send = await channelEncryption(keys, 2, transcripts, "send");
    const receive = await channelEncryption(keys, 2, transcripts, "receive");
    const all = new Set(send.flatMap((e) => [hex(e!.outboundKey), hex(e!.inboundKey)]));
    assert.equal(all.size, 32);
    send.forEach((e, i) => {
      assert.deepEqual(e!.outboundKey, receive[i]!.inboundKey);
      assert.deepEqual(e!.inboundKey, receive[i]!.outboundKey);
    });
    assert.deepEqual(await channelEncryption(keys, 0, transcripts, "send"), Array(16).fill(undefined));
  });

  test("message n is sealed under epoch ⌊n / 2^24⌋'s key with nonce n; a call never straddles two epochs", () => {
    const trafficKey = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
    const sealer = new SealingDirection(CIPHER_IDS["aes-256-gcm"], trafficKey);
    const plain = Uint8Array.from({ length: 100 }, (_, i) => i);
    const list = new MessageList(3);
    const out = new Uint8Array(3 * (100 + TAG_BYTES));
    const sealThree = () => {
      list.clear();
      for (let i = 0; i < 3; i++) list.push(addressOf(plain), plain.length);
      return sealer.seal(list, addressOf(out));
    };
    assert.equal(sealThree(), out.length);
    for (let i = 0; i < 3; i++) {
      const sealed = out.subarray(i * 116, (i + 1) * 116);
      assert.deepEqual(gcmOpen(epochKey(trafficKey, 0), i, sealed), plain, `message ${i}`);
    }
    // Three messages from 2^24 - 2 would straddle epochs 0 and 1: they take 2^24.. instead.
    sealer.skipTo(MESSAGES_PER_KEY - 2);
    sealThree();
    assert.equal(sealer.nextMessage, MESSAGES_PER_KEY + 3);
    for (let i = 0; i < 3; i++) {
      const sealed = out.subarray(i * 116, (i + 1) * 116);
      assert.deepEqual(gcmOpen(epochKey(trafficKey, 1), MESSAGES_PER_KEY + i, sealed), plain);
    }
    // The opening side, making the same calls, skips alike.
    const opener = new SealingDirection(CIPHER_IDS["aes-256-gcm"], trafficKey);
    opener.skipTo(MESSAGES_PER_KEY - 2);
    const back = new Uint8Array(300);
    list.clear();
    for (let i = 0; i < 3; i++) list.push(addressOf(back) + i * 100, 100);
    opener.open(addressOf(out), list, "test");
    keepAlive(out); // read through its address only
    assert.deepEqual(back.subarray(200), plain);
  });

  test("nonces never repeat: past 2^48 messages a direction refuses with EncryptionLimitError", () => {
    const sealer = new SealingDirection(CIPHER_IDS["aegis-128l"], new Uint8Array(32));
    const list = new MessageList(2);
    const plain = new Uint8Array(16);
    list.push(addressOf(plain), 16);
    list.push(addressOf(plain), 16);
    const out = new Uint8Array(64);
    sealer.skipTo(MAX_MESSAGES - 2);
    sealer.seal(list, addressOf(out));
    assert.throws(() => sealer.seal(list, addressOf(out)), EncryptionLimitError);
    assert.throws(() => sealer.skipTo(5), RangeError);
    keepAlive(plain); // the list holds its address only
  });
});

describe("sealed packet framing (docs/PROTOCOL.md)", () => {
  test("a data packet of 20 contiguous pages: header record, offsets record, page data in 64 KiB messages", async () => {
    const pages = 20;
    const region = Region.allocate(pages * PAGE_SIZE);
    fillPattern(region, 3);
    const toReceiver = Uint8Array.from({ length: 32 }, (_, i) => i);
    const cipher = CIPHER_IDS["aes-256-gcm"];
    const codec = sealedFormat.sender(
      {
        channelId: 0,
        pageSize: PAGE_SIZE,
        pagesPerPacket: 32,
        encryption: { cipher, outboundKey: toReceiver, inboundKey: new Uint8Array(32) },
      },
      region.descriptor,
      () => {},
    );
    const staging = new Uint8Array(codec.stagingBytes);
    const offsets = new Float64Array(Array.from({ length: pages }, (_, i) => i * PAGE_SIZE));
    const out = codec.data(offsets, pages, new Float64Array(), 0, addressOf(staging));
    const wire = staging.subarray(0, out.headLength + out.payload.lengths.reduce((a, b) => a + b, 0));
    const key = epochKey(toReceiver, 0);
    let at = 0;
    const next = (length: number, nonce: number) => {
      const plain = gcmOpen(key, nonce, wire.subarray(at, at + length + TAG_BYTES));
      at += length + TAG_BYTES;
      return plain;
    };
    const header = new DataView(next(PACKET_HEADER_BYTES, 0).buffer);
    assert.equal(header.getUint32(0), 0x5a434d50); // "ZCMP"
    assert.equal(header.getUint8(4), 1); // DATA
    assert.equal(header.getUint32(16), pages);
    assert.equal(header.getUint32(24), pages * PAGE_SIZE);
    const offsetBytes = new DataView(next(pages * 8, 1).buffer);
    assert.equal(Number(offsetBytes.getBigUint64(19 * 8)), 19 * PAGE_SIZE);
    assert.equal(out.headLength, at);
    // 80 KiB of contiguous pages: one message of 64 KiB, one of 16 KiB.
    assert.deepEqual(next(MAX_MESSAGE_BYTES, 2), region.view(0, MAX_MESSAGE_BYTES));
    assert.deepEqual(next(16 * 1024, 3), region.view(MAX_MESSAGE_BYTES, 16 * 1024));
    assert.equal(at, wire.length);
    assert.equal(out.payloadBytes, pages * PAGE_SIZE);
    await region.close();
  });
});
