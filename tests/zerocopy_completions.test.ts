// Completion accounting at unit level: synthetic ranges as the kernel may report them.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ZeroCopyAccountingError, ZeroCopyCompletions } from "../mod.ts";
import { collectGarbage } from "../dev/runtime.ts";

function sent(count: number, firstId = 0): ZeroCopyCompletions {
  const c = new ZeroCopyCompletions(firstId);
  for (let i = 0; i < count; i++) c.recordSend();
  return c;
}

describe("ZeroCopyCompletions", () => {
  test("one coalesced range completes many sends", () => {
    const c = sent(10);
    c.complete(0, 9, true);
    assert.equal(c.outstanding, 0);
    assert.equal(c.completions, 10);
    assert.equal(c.copied, 10);
    assert.equal(c.endEpoch(), 1);
  });

  test("out-of-order ranges complete only when the gap closes", () => {
    const c = sent(6);
    c.complete(3, 5, false);
    assert.equal(c.outstanding, 6, "ids 0..2 still pending");
    c.complete(1, 2, false);
    assert.equal(c.outstanding, 6);
    c.complete(0, 0, false);
    assert.equal(c.outstanding, 0);
    assert.equal(c.completions, 6);
    assert.equal(c.endEpoch(), 0, "nothing was copied");
  });

  test("ranges across the 32-bit wrap", () => {
    const c = sent(8, 0xffff_fffc); // ids fffffffc, fffffffd, fffffffe, ffffffff, 0, 1, 2, 3
    c.complete(0xffff_fffe, 1, true); // wraps: 4 sends
    assert.equal(c.outstanding, 8);
    c.complete(0xffff_fffc, 0xffff_fffd, true);
    assert.equal(c.outstanding, 2);
    c.complete(2, 3, true);
    assert.equal(c.outstanding, 0);
    assert.equal(c.completions, 8);
    assert.equal(c.endEpoch(), 1);
  });

  test("a wrapping range reported before the sends before it", () => {
    const c = sent(4, 0xffff_fffe);
    c.complete(0, 1, false);
    c.complete(0xffff_ffff, 0xffff_ffff, false);
    assert.equal(c.outstanding, 4);
    c.complete(0xffff_fffe, 0xffff_fffe, true);
    assert.equal(c.outstanding, 0);
    assert.equal(c.copied, 1);
    assert.equal(c.endEpoch(), 0, "only some completions were copied");
  });

  test("epochs: the flush result covers completions since the previous flush", () => {
    const c = sent(2);
    c.complete(0, 0, false);
    assert.equal(c.endEpoch(), 0);
    c.complete(1, 1, true);
    assert.equal(c.endEpoch(), 1);
    assert.equal(c.endEpoch(), 0, "no completion at all since the last flush");
  });

  test("completions for ids never sent, or twice, are accounting errors", () => {
    const c = sent(3);
    assert.throws(() => c.complete(2, 3, false), ZeroCopyAccountingError);
    c.complete(1, 1, false);
    assert.throws(() => c.complete(1, 2, false), ZeroCopyAccountingError);
    assert.throws(() => c.complete(0, 1, false), ZeroCopyAccountingError);
    c.complete(0, 0, false);
    assert.throws(() => c.complete(0, 0, false), ZeroCopyAccountingError, "id 0 is no longer outstanding");
  });

  test("held buffers are released once every send before them completed", () => {
    const c = new ZeroCopyCompletions();
    c.recordSend();
    c.hold(["first buffers"]);
    c.recordSend();
    c.recordSend();
    c.hold(["second buffers"]);
    assert.equal(c.heldCount, 2);
    c.complete(1, 2, false);
    assert.equal(c.heldCount, 2, "send 0 is still in flight: nothing may be released");
    c.complete(0, 0, false);
    assert.equal(c.heldCount, 0);
  });

  test("held buffers are released in order as the prefix completes", () => {
    const c = new ZeroCopyCompletions(0xffff_ffff);
    c.recordSend();
    c.hold(["a"]);
    c.recordSend();
    c.hold(["b"]);
    c.complete(0xffff_ffff, 0xffff_ffff, true);
    assert.equal(c.heldCount, 1, "a released across the wrap, b still held");
    c.complete(0, 0, true);
    assert.equal(c.heldCount, 0);
  });

  test("pinned bytes: each send's charge is released when the completed prefix covers it", () => {
    const c = new ZeroCopyCompletions(0xffff_fffe);
    for (const charge of [8192, 12288, 16384, 20480]) c.recordSend(charge);
    assert.equal(c.pinnedBytes, 57344);
    c.complete(1, 1, true); // the 4th send, across the wrap: out of order
    assert.equal(c.pinnedBytes, 57344, "released only when the oldest sends complete");
    c.complete(0xffff_fffe, 0xffff_ffff, true);
    assert.equal(c.pinnedBytes, 16384 + 20480, "the 4th send's charge stays until the 3rd completes");
    c.chargeNewest(4096); // a refused send that extended the newest notification
    assert.equal(c.pinnedBytes, 16384 + 20480 + 4096);
    c.complete(0, 0, true);
    assert.equal(c.pinnedBytes, 0);
    c.chargeNewest(4096);
    assert.equal(c.pinnedBytes, 0, "nothing outstanding: nothing to extend");
  });

  test("pinned bytes stay exact past the initial ring size, with many sends outstanding", () => {
    const first = 0xffff_ff00;
    const c = new ZeroCopyCompletions(first);
    const charges: number[] = [];
    let completed = 0;
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 1000; i++) {
        charges.push(((i * 7 + round) % 9 + 2) * 4096);
        c.recordSend(charges.at(-1)!);
      }
      // Complete all but the newest 10 sends, in two ranges, the newer one first.
      const upTo = charges.length - 10;
      const middle = completed + Math.floor((upTo - completed) / 2);
      c.complete((first + middle) >>> 0, (first + upTo - 1) >>> 0, false);
      c.complete((first + completed) >>> 0, (first + middle - 1) >>> 0, false);
      completed = upTo;
      const pinned = charges.slice(completed).reduce((a, b) => a + b, 0);
      assert.equal(c.pinnedBytes, pinned, `round ${round}`);
      assert.equal(c.outstanding, 10);
    }
    c.complete((first + completed) >>> 0, (first + charges.length - 1) >>> 0, true);
    assert.equal(c.outstanding, 0);
    assert.equal(c.pinnedBytes, 0);
  });

  test("after releaseAll (socket closed) nothing is held any more, also by later holds", () => {
    const c = new ZeroCopyCompletions();
    c.recordSend(8192);
    c.hold(["queued"]);
    c.releaseAll();
    assert.equal(c.heldCount, 0);
    assert.equal(c.pinnedBytes, 0);
    c.hold(["from a write that was still running"]);
    assert.equal(c.heldCount, 0);
  });

  test("after abandon (socket handed on) held buffers outlive the tracker", async () => {
    const c = new ZeroCopyCompletions();
    const refs: WeakRef<Uint8Array>[] = [];
    const holdFresh = () => {
      const buffer = new Uint8Array(1 << 20);
      refs.push(new WeakRef(buffer));
      c.hold([buffer]);
    };
    c.recordSend(4096);
    holdFresh();
    c.abandon();
    assert.equal(c.heldCount, 0);
    holdFresh(); // a write that was still running when the socket was handed on
    assert.equal(c.heldCount, 0);
    await new Promise((resolve) => setTimeout(resolve, 0));
    collectGarbage();
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 2, "abandoned buffers were freed");
  });
});
