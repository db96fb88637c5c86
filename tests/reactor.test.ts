// The reactor (src/reactor.ts): one helper Worker per process polls every fd an async
// operation waits on. It runs while something holds it — a listener made ready, a channel
// that waited — and stops when the last holder closes: it keeps no process alive then.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ChannelClosedError, connect, listen } from "../mod.ts";
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
});
