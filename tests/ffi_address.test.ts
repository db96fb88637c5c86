// addressOf: the native address of a view's first byte, which the channel writes into
// iovecs. It must alias the view's bytes (byteOffset included) and stay valid across
// garbage collections — also for small typed arrays, which the engines may first keep
// in their moving GC heap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { addressOf, viewOf } from "../ffi/mod.ts";
import { collectGarbage } from "../dev/runtime.ts";

/** Young-generation churn around full collections, so that movable objects do move. */
function churn(): void {
  for (let round = 0; round < 3; round++) {
    let keep: Uint8Array[] = [];
    for (let i = 0; i < 20_000; i++) keep.push(new Uint8Array(16 + (i % 48)));
    collectGarbage();
    keep = [];
  }
}

test("addressOf aliases the view's bytes, small and large, at any byteOffset, across GC", () => {
  // Addresses first: nothing here may touch `.buffer` before addressOf does.
  const typed = [new Uint8Array(8), new Uint8Array(40).subarray(3, 29), new Uint8Array(64 * 1024).subarray(4103)];
  const words = new Uint32Array(5);
  const addresses = [...typed.map((view) => addressOf(view)), addressOf(words)];
  const views = [...typed, new Uint8Array(words.buffer)];
  churn();
  views.forEach((view, n) => {
    assert.equal(addressOf(view), addresses[n], `view ${n}: the address changed after a collection`);
    const native = viewOf(addresses[n], view.length);
    for (let i = 0; i < view.length; i++) view[i] = (i * 7 + n) & 0xff;
    assert.deepEqual(native, view, `view ${n}: the address does not alias the view's bytes`);
    native.fill(0xa5);
    assert.ok(view.every((b) => b === 0xa5), `view ${n}: writes through the address are not seen by the view`);
  });
});

test("addressOf of views over one buffer differ by their byteOffset", () => {
  const buffer = new ArrayBuffer(4096);
  const base = addressOf(new Uint8Array(buffer));
  for (const offset of [1, 100, 4095]) assert.equal(addressOf(new Uint8Array(buffer, offset)), base + offset);
});
