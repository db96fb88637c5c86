// Region holds: close() waits for every transfer holding the region, a release without a
// hold is refused (an in-use count below zero would let a later close() unmap memory a
// transfer still uses), and an abandoned hold — a Worker that never confirmed it let go —
// keeps the mapping for good.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError, Region } from "../mod.ts";

describe("Region holds", () => {
  test("close() waits for the last release; a release without a hold is refused", async () => {
    const region = Region.allocate(8192);
    region.retain();
    region.retain();
    let closed = false;
    const closing = region.close().then(() => (closed = true));
    region.release();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(closed, false, "closed while a transfer still held it");
    assert.equal(region.inUse, 1);
    region.release();
    await closing;
    assert.equal(region.inUse, 0);
    assert.throws(() => region.release(), InvalidArgumentError);
  });

  test("an abandoned hold: close() completes but never unmaps", async () => {
    const region = Region.allocate(8192);
    region.view(0, 8192).fill(0xa5);
    const borrowed = Region.fromDescriptor(region.descriptor);
    region.retain();
    region.abandon();
    await region.close();
    assert.equal(region.closed, true);
    assert.equal(region.inUse, 0);
    // Still mapped: reading it through a region that borrows the address does not fault
    // (an unmapped page would kill this process with SIGSEGV).
    assert.equal(borrowed.view(4096, 1)[0], 0xa5);
  });
});
