// IovecArray: the iovec words handed to sendmsg/recvmsg, advanced after partial
// transfers, and capped per call (pending(maxBytes)) without losing any byte.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { IovecArray } from "../src/iovec.ts";

/** The (base, length) pairs of the first `count` iovecs in `words`. */
function pairs(words: Uint32Array, count: number): [number, number][] {
  return Array.from({ length: count }, (_, i) => [
    words[i * 4] + words[i * 4 + 1] * 2 ** 32,
    words[i * 4 + 2] + words[i * 4 + 3] * 2 ** 32,
  ]);
}

describe("IovecArray", () => {
  test("pending(maxBytes) shortens the last iovec for one call only; advance restores it", () => {
    const iov = new IovecArray().loadRanges([0x1000, 0x10000, 0x20000], [100, 200, 300]);
    let { words, count } = iov.pending(150);
    assert.deepEqual(pairs(words, count), [[0x1000, 100], [0x10000, 50]]);
    iov.advance(150); // the kernel took all of it
    ({ words, count } = iov.pending());
    assert.deepEqual(pairs(words, count), [[0x10000 + 50, 150], [0x20000, 300]]);
    ({ words, count } = iov.pending(150)); // exactly one iovec: nothing to shorten
    assert.deepEqual(pairs(words, count), [[0x10000 + 50, 150]]);
    ({ words, count } = iov.pending(10)); // a failed call: the next pending() restores
    assert.deepEqual(pairs(words, count), [[0x10000 + 50, 10]]);
    ({ words, count } = iov.pending());
    assert.deepEqual(pairs(words, count), [[0x10000 + 50, 150], [0x20000, 300]]);
    iov.advance(120); // partial
    ({ words, count } = iov.pending(1000)); // more than remains: no cut
    assert.deepEqual(pairs(words, count), [[0x10000 + 170, 30], [0x20000, 300]]);
    assert.equal(iov.remaining, 330);
  });

  test("a cut beyond 4 GiB keeps both 32-bit halves of the length", () => {
    const big = 6 * 2 ** 30;
    const iov = new IovecArray().loadRanges([0x7000_0000_0000], [big]);
    let { words, count } = iov.pending(5 * 2 ** 30 + 7);
    assert.deepEqual(pairs(words, count), [[0x7000_0000_0000, 5 * 2 ** 30 + 7]]);
    iov.advance(2 ** 32);
    ({ words, count } = iov.pending());
    assert.deepEqual(pairs(words, count), [[0x7000_0000_0000 + 2 ** 32, big - 2 ** 32]]);
  });
});
