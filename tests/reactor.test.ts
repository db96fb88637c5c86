// The reactor (src/reactor.ts): one helper Worker per process polls every fd an async
// operation waits on. It runs while something holds it — a listener made ready, a channel
// that waited — and stops when the last holder closes: it keeps no process alive then.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ChannelClosedError, connect, listen } from "../mod.ts";
import { native, Poll } from "../ffi/mod.ts";
import { Reactor } from "../src/reactor.ts";

describe("the reactor", () => {
  test("listen() starts nothing; prepare() has the Worker running before the first accept; close() lets it stop", async () => {
    assert.equal(Reactor.shared.running, false, "nothing in this file holds the reactor yet");
    const listener = await listen({ port: 0 });
    assert.equal(Reactor.shared.running, false);
    await listener.prepare();
    assert.equal(Reactor.shared.running, true);
    const [client, server] = await Promise.all([
      connect({ hostname: "127.0.0.1", port: listener.port }),
      listener.accept(),
    ]);
    await client.writev([new Uint8Array([1, 2, 3])]);
    const got = new Uint8Array(3);
    assert.equal(await server.readFull(got), 3);
    client.close();
    server.close();
    assert.equal(Reactor.shared.running, true, "the listener still holds it");
    listener.close();
    assert.equal(Reactor.shared.running, false);
    await assert.rejects(listener.prepare(), ChannelClosedError);
    assert.equal(Reactor.shared.running, false);
  });

  test("the Worker scans the slots up to the highest in use: every wait fires, in any order, and the scan stays that short", async () => {
    const reactor = Reactor.shared;
    const fds = Array.from({ length: 41 }, () => native.zc_eventfd());
    assert.ok(fds.every((fd) => fd >= 0));
    const [keeper, ...others] = fds;
    try {
      // The keeper's wait keeps the reactor running (it stops when nothing waits) until the end.
      const kept = reactor.wait(keeper, Poll.IN, -1);
      const waits = others.map((fd) => reactor.wait(fd, Poll.IN, -1));
      await reactor.ready();
      assert.equal(reactor.scannedSlots, fds.length, "41 waits at once: slots 0 to 40");
      // Highest slot first: each must be found although armed long before.
      for (const [i, fd] of [...others.entries()].reverse()) {
        native.zc_eventfd_signal(fd);
        assert.equal((await waits[i]) & Poll.IN, Poll.IN);
      }
      // Freed slots are reused before unused ones: more waits do not widen the scan.
      for (const fd of others) native.zc_eventfd_clear(fd);
      const deadline = reactor.wait(others[0], Poll.IN, 20);
      const more = others.slice(1, 4).map((fd) => reactor.wait(fd, Poll.IN, -1));
      await reactor.ready(); // after the waits above have taken their slots
      assert.equal(reactor.scannedSlots, fds.length);
      for (const fd of others.slice(1, 4)) native.zc_eventfd_signal(fd);
      assert.deepEqual((await Promise.all(more)).map((revents) => revents & Poll.IN), [Poll.IN, Poll.IN, Poll.IN]);
      assert.equal(await deadline, 0, "a deadline alone fires too");
      native.zc_eventfd_signal(keeper);
      assert.equal((await kept) & Poll.IN, Poll.IN);
      assert.equal(reactor.running, false, "nothing waits: the Worker stopped");
    } finally {
      for (const fd of fds) native.zc_close(fd);
    }
  });
});
