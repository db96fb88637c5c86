// wire_writes.ts writePacketSync: a data packet's head and pages in one native call
// (zig/transfer.zig zc_send_pages: pages that follow each other as one iovec, batches of at
// most IOV_MAX iovecs, a file region's pages faulted in first), over real loopback sockets;
// the receiving end reads what arrived with the channel's own reads. The packets fit the
// socket buffers, so the blocking write never waits on the reader in the same thread.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { addressOf, keepAlive } from "../ffi/mod.ts";
import { InvalidArgumentError } from "../src/errors.ts";
import { Region } from "../src/region.ts";
import { type PagePayload, payloadBytes, writePacketSync } from "../src/wire_writes.ts";
import { channelPair } from "./helpers/pair.ts";
import { patternBytes } from "./helpers/pattern.ts";

/** What the packet should put on the wire: the head, then each page's bytes in the payload's order. */
function expectedBytes(head: Uint8Array, region: Region, pages: PagePayload): Uint8Array {
  const parts = [head];
  for (let i = 0; i < pages.count; i++) {
    const offset = pages.offsets[i];
    parts.push(region.view(offset, Math.min(pages.pageSize, region.size - offset)).slice());
  }
  const bytes = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) bytes.set(part, at), (at += part.length);
  return bytes;
}

/** Sends `pages` of `region` after a patterned head over a loopback pair; returns what arrived and the write's result. */
async function sendAndReceive(region: Region, pages: PagePayload, headLength: number, populate = false) {
  const pair = await channelPair();
  try {
    const head = patternBytes(headLength, 3);
    const expected = expectedBytes(head, region, pages);
    const written = writePacketSync(pair.client, addressOf(head), head.length, pages, populate);
    keepAlive(head); // read through its address by the native call above
    const received = new Uint8Array(expected.length);
    assert.equal(await pair.server.readFull(received), expected.length);
    return { written, expected, received, stats: pair.client.stats };
  } finally {
    pair.close();
  }
}

describe("writePacketSync: a packet's head and pages in one native call", () => {
  test("pages in any order, neighbours merged, the region's short last page: the bytes arrive in order", async () => {
    const page = 4096;
    const region = Region.allocate(10 * page + 100); // page 10 holds 100 bytes
    region.view().set(patternBytes(region.size, 7));
    const offsets = new Float64Array([5, 1, 2, 3, 10, 0, 9].map((p) => p * page));
    const pages = { memory: region.descriptor, pageSize: page, offsets, count: offsets.length };
    assert.equal(payloadBytes(pages), 6 * page + 100);
    const { written, expected, received, stats } = await sendAndReceive(region, pages, 4128);
    assert.equal(written, 4128 + 6 * page + 100);
    assert.equal(stats.bytesWritten, written);
    assert.deepEqual(received, expected);
    await region.close();
  });

  test("more pages than one call's iovecs (IOV_MAX): sent in batches, the head first", async () => {
    const pageSize = 16; // small pages: 1,500 iovecs in ~24 KB
    const region = Region.allocate(3000 * pageSize);
    region.view().set(patternBytes(region.size, 9));
    const offsets = Float64Array.from({ length: 1500 }, (_, i) => 2 * i * pageSize); // none contiguous
    const pages = { memory: region.descriptor, pageSize, offsets, count: 1500 };
    const { written, expected, received } = await sendAndReceive(region, pages, 32);
    assert.equal(written, 32 + 1500 * pageSize);
    assert.deepEqual(received, expected);
    await region.close();
  });

  test("a head alone (no pages), and only the first `count` offsets sent", async () => {
    const region = Region.allocate(8 * 4096);
    region.view().set(patternBytes(region.size, 4));
    const offsets = new Float64Array([4 * 4096, 6 * 4096, 0]);
    for (const count of [0, 2]) {
      const pages = { memory: region.descriptor, pageSize: 4096, offsets, count };
      const { written, expected, received } = await sendAndReceive(region, pages, 32);
      assert.equal(written, 32 + count * 4096);
      assert.deepEqual(received, expected);
    }
    await region.close();
  });

  test("from a file region in memory, its pages populated first: the file's bytes", async () => {
    const dir = mkdtempSync(join("/dev/shm", "write-packet-"));
    const region = Region.createFile(join(dir, "pages"), 16 * 4096);
    try {
      region.view().set(patternBytes(region.size, 12));
      assert.equal(region.descriptor.populate, true, "/dev/shm is tmpfs: its mappings are populated per packet");
      const offsets = new Float64Array([3, 4, 5, 15].map((p) => p * 4096));
      const pages = { memory: region.descriptor, pageSize: 4096, offsets, count: 4 };
      const { expected, received } = await sendAndReceive(region, pages, 64, true);
      assert.deepEqual(received, expected);
    } finally {
      await region.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("refused: more pages than offsets, and a zero-copy send still outstanding (nothing written)", async () => {
    const region = Region.allocate(4 * 4096);
    const head = new Uint8Array(32);
    const pair = await channelPair({ zerocopy: true });
    try {
      const tooMany = { memory: region.descriptor, pageSize: 4096, offsets: new Float64Array(2), count: 3 };
      assert.throws(() => writePacketSync(pair.client, addressOf(head), 32, tooMany, false), InvalidArgumentError);
      const zerocopied = new Uint8Array(4096);
      pair.client.writevZerocopySync([zerocopied]);
      const one = { memory: region.descriptor, pageSize: 4096, offsets: new Float64Array(1), count: 1 };
      assert.equal(pair.client.nativeCallsAllowed, false);
      assert.throws(() => writePacketSync(pair.client, addressOf(head), 32, one, false), InvalidArgumentError);
      assert.equal(pair.client.stats.bytesWritten, 4096, "only the zero-copy send");
      await pair.client.flushZerocopy();
      assert.equal(pair.client.nativeCallsAllowed, true);
      keepAlive(head);
    } finally {
      pair.close();
      await region.close();
    }
  });

  test("payloadBytes: whole pages, less the short last page's lack wherever it is listed", () => {
    const memory = { address: 0, size: 3 * 4096 + 10 };
    const bytes = (list: number[]) =>
      payloadBytes({
        memory,
        pageSize: 4096,
        offsets: new Float64Array(list.map((p) => p * 4096)),
        count: list.length,
      });
    assert.equal(bytes([0, 1]), 2 * 4096);
    assert.equal(bytes([0, 3]), 4096 + 10);
    assert.equal(bytes([3, 0, 2]), 2 * 4096 + 10);
    assert.equal(bytes([]), 0);
  });
});
