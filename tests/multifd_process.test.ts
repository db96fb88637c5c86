// Multifd across processes: Deno sender to Bun receiver and the reverse, and aborting a
// transfer from either side (both sides fail, every Worker exits, the process exits).
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { runtime } from "../mod.ts";
import { lastJson, LineChild, run } from "../dev/child.ts";
import { otherRuntime as other, runtimeArgv, scriptArgv } from "../dev/runtime.ts";

const peer = fileURLToPath(new URL("./helpers/multifd_peer.ts", import.meta.url));
const aborter = fileURLToPath(new URL("./helpers/multifd_abort.ts", import.meta.url));

/** Starts a receiver child; `port` resolves once it prints "PORT n". */
function startReceiver(argv: string[]) {
  const child = new LineChild(argv, { label: "receiver" });
  const port = child.waitFor(/PORT (\d+)/).then((match) => Number(match[1]));
  const exited = child.exited.then(({ code }) => ({ code, stdout: child.stdout, stderr: child.stderr }));
  return { port, exited, kill: () => child.kill() };
}

const SIZE = String(24 * 2 ** 20 + 4096 * 3 + 17);

describe("multifd between runtimes", () => {
  test(`${runtime} sender -> ${other} receiver`, async () => {
    const receiver = startReceiver(scriptArgv(other, peer, ["recv", SIZE, "42"]));
    try {
      const port = await receiver.port;
      const sender = await run(runtimeArgv(peer, ["send", String(port), SIZE, "42", "3", "1"]), 60_000);
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.deepEqual(lastJson(sender.stdout), { runtime, verified: true, bytes: Number(SIZE) });
      assert.deepEqual(lastJson(received.stdout), { runtime: other, verified: true, equal: true, bytes: Number(SIZE) });
    } finally {
      await receiver.kill();
    }
  });

  test(`${other} sender -> ${runtime} receiver`, async () => {
    const receiver = startReceiver(runtimeArgv(peer, ["recv", SIZE, "7"]));
    try {
      const port = await receiver.port;
      const sender = await run(scriptArgv(other, peer, ["send", String(port), SIZE, "7", "2", "0"]), 60_000);
      assert.equal(sender.code, 0, sender.stderr);
      const received = await receiver.exited;
      assert.equal(received.code, 0, received.stderr);
      assert.equal(lastJson(sender.stdout).verified, true);
      assert.deepEqual(lastJson(received.stdout), { runtime, verified: true, equal: true, bytes: Number(SIZE) });
    } finally {
      await receiver.kill();
    }
  });
});

describe("cancelling a transfer", () => {
  for (const side of ["sender", "receiver"]) {
    test(`abort on the ${side} side: both sides fail, nothing is left, the process exits`, async () => {
      const result = await run(runtimeArgv(aborter, [side]), 60_000);
      assert.equal(result.signal, null, "the process had to be killed: something kept it alive");
      assert.equal(result.code, 0, result.stderr);
      const report = lastJson(result.stdout);
      assert.match(report.senderError, /Error/, "the sender must fail");
      assert.match(report.receiverError, /Error/, "the receiver must fail");
      assert.ok(report.settledMs < 10_000, `both sides settled after ${report.settledMs} ms`);
      assert.equal(report.socketsAfter, report.socketsBefore, "TCP sockets left open");
    });
  }
});
