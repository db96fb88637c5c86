// A multifd sender whose receiver is on this host caps its send buffer by default
// (SAME_HOST_SEND_BUFFER_BYTES), as `--send-buffer` did by hand; across a network — here
// a veth pair between network namespaces — the kernel's autotuning stays.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { connect, listen, Region, SAME_HOST_SEND_BUFFER_BYTES } from "../mod.ts";
import { LineChild } from "../dev/child.ts";
import { runtimeArgv } from "../dev/runtime.ts";
import { fillPattern, transfer } from "./helpers/multifd.ts";
import { inNamespace, twoHosts } from "./helpers/netns.ts";
import { isRoot, requirement } from "./helpers/preconditions.ts";

const probe = fileURLToPath(new URL("./helpers/peer_probe.ts", import.meta.url));

async function peerOnThisHost(hostname: string): Promise<boolean> {
  const listener = await listen({ hostname, port: 0 });
  const accepting = listener.accept(10_000);
  const client = await connect({ hostname, port: listener.port });
  const server = await accepting;
  try {
    assert.equal(server.peerOnThisHost, client.peerOnThisHost, "both ends agree");
    return client.peerOnThisHost;
  } finally {
    client.close();
    server.close();
    listener.close();
  }
}

/** Sends a small region over loopback with `sendBufferBytes`; returns what the sender applied. */
async function sendBufferOf(sendBufferBytes?: number): Promise<number | undefined> {
  const source = Region.allocate(3 << 20);
  fillPattern(source, 12);
  const { sent, received, destination, sender } = await transfer(source, { sender: { channels: 2, sendBufferBytes } });
  assert.equal(sent.verified && received.verified, true);
  await source.close();
  await destination.close();
  return sender.sendBufferBytes;
}

describe("same host", () => {
  test("loopback peers are on this host, over IPv4 and IPv6", async () => {
    assert.equal(await peerOnThisHost("127.0.0.1"), true);
    assert.equal(await peerOnThisHost("::1"), true);
  });

  test("the sender caps its send buffer for a receiver on this host; -1 or a size overrides", async () => {
    assert.equal(await sendBufferOf(), SAME_HOST_SEND_BUFFER_BYTES);
    assert.equal(await sendBufferOf(-1), undefined);
    assert.equal(await sendBufferOf(1 << 20), 1 << 20);
  });

  test(
    "a peer in another network namespace (veth) is not on this host",
    { skip: requirement(isRoot, "needs root for network namespaces") },
    async () => {
      const hosts = twoHosts();
      let listener: LineChild | undefined;
      try {
        listener = new LineChild(inNamespace(hosts.b.ns, runtimeArgv(probe, ["listen", hosts.b.ip])));
        const port = (await listener.waitFor(/PORT (\d+)/))[1];
        const client = new LineChild(inNamespace(hosts.a.ns, runtimeArgv(probe, ["connect", hosts.b.ip, port])));
        const line = await client.waitFor(/\{.*\}/);
        assert.deepEqual(JSON.parse(line[0]), { peerOnThisHost: false });
      } finally {
        await listener?.kill();
        hosts.remove();
      }
    },
  );
});
